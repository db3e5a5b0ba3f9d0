"""The scope guard on a stack limited to one resource group (SKR_SCOPES)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localdev.stack import Stack, start_stack
from localdev.twin.core import TwinConfig
from tests.e2e.helpers import assignments_of, onboard


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Scoped to the resource group ``cvm-rg`` of the twin's subscription."""
    config = TwinConfig(propagation="fixed:15", seed=6)
    scope = f"/subscriptions/{config.subscription_id}/resourceGroups/cvm-rg"
    with start_stack(twin_config=config, settings={"SKR_SCOPES": scope}) as running:
        yield running


def test_vms_outside_the_scopes_are_never_onboarded_by_event_http_or_reconcile(stack: Stack) -> None:
    outside = stack.twin.create_vm("cvm-elsewhere", resource_group="other-rg")
    inside, result = onboard(stack, "cvm-inside")
    assert result["outcome"] == "released"
    stack.settle()
    assert stack.host.get_status(stack.onboarding_id(outside)) is None  # its write event was ignored
    refused = stack.api("POST", "/api/onboardings", {"vm_id": outside.resource_id})
    assert refused.status == 403 and refused.json()["error"]["code"] == "out_of_scope"
    assert stack.run_reconcile().status < 300
    stack.settle()
    assert stack.host.get_status(stack.onboarding_id(outside)) is None
    assert assignments_of(stack, outside) == [] and len(assignments_of(stack, inside)) == 1
    foreign = "/subscriptions/00000000-0000-0000-0000-00000000beef/resourceGroups/cvm-rg/providers/Microsoft.Compute/virtualMachines/x"
    event = {
        "id": "1",
        "subject": foreign,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "data": {"operationName": "Microsoft.Compute/virtualMachines/write", "resourceUri": foreign},
    }
    assert stack.deliver_events([event]).status == 202
    stack.settle()
    assert [s.instance_id for s in stack.host.instances(prefix="onboard-x-")] == []
