"""VmService against the twin with the real azure-mgmt-compute client: inspect and list CVMs in scope."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError

from localdev.twin.core import Twin
from localdev.twin.model import TeeProfile
from skr.errors import Operation, classify
from skr.models import FailureCode, ScopeId, VmResourceId
from skr.services.vms import VmService
from skr.settings import TagFilter
from tests.contract._services_support import app_settings, factory_for, started_twin, unique


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    with started_twin() as started:
        yield started


@pytest.fixture(scope="module")
def service(twin: Twin) -> VmService:
    return VmService(factory_for(app_settings(twin)))


def test_inspect_a_confidential_vm_reports_every_fact(twin: Twin, service: VmService) -> None:
    vm = twin.create_vm(unique("cvm"), tags={"skr-key": "shared-1", "env": "prod"})
    facts = service.inspect(VmResourceId.parse(vm.resource_id))
    assert facts.vm_id == VmResourceId.parse(vm.resource_id)
    assert facts.is_confidential and facts.security_type == "ConfidentialVM"
    assert facts.principal_id == vm.principal_id
    assert facts.tenant_id == twin.config.tenant_id
    assert facts.unique_id == vm.vm_id
    assert facts.os_type == "Linux"
    assert facts.location == vm.location
    assert facts.provisioning_state == "Succeeded"
    assert facts.power_state == "running"
    assert facts.tags == {"skr-key": "shared-1", "env": "prod"}


def test_inspect_trusted_launch_windows_and_identity_less_vms(twin: Twin, service: VmService) -> None:
    trusted = twin.create_vm(unique("tl"), tee=TeeProfile.TRUSTED_LAUNCH, os_type="Windows")
    facts = service.inspect(VmResourceId.parse(trusted.resource_id))
    assert facts.security_type == "TrustedLaunch" and not facts.is_confidential
    assert facts.os_type == "Windows"

    plain = twin.create_vm(unique("noid"), identity=False)
    facts = service.inspect(VmResourceId.parse(plain.resource_id))
    assert facts.is_confidential and facts.principal_id is None and facts.tenant_id is None


def test_inspect_is_case_insensitive_on_the_id(twin: Twin, service: VmService) -> None:
    vm = twin.create_vm(unique("case"))
    shouted = vm.resource_id.replace("resourceGroups", "RESOURCEGROUPS").replace(vm.name, vm.name.upper())
    assert service.inspect(VmResourceId.parse(shouted)).principal_id == vm.principal_id


def test_missing_vm_classifies_as_vm_not_found(twin: Twin, service: VmService) -> None:
    missing = VmResourceId.parse(twin.vm_resource_id(unique("ghost")))
    with pytest.raises(HttpResponseError) as caught:
        service.inspect(missing)
    error = classify(caught.value, Operation.VM_READ)
    assert error.code is FailureCode.VM_NOT_FOUND and not error.retryable and error.status == 404


def test_list_cvms_by_resource_group_and_tag_filter(twin: Twin, service: VmService) -> None:
    group = unique("rg")
    other = unique("rg")
    tagged = twin.create_vm(unique("a"), resource_group=group, tags={"onboard": "yes"})
    untagged = twin.create_vm(unique("b"), resource_group=group)
    twin.create_vm(unique("tl"), resource_group=group, tee=TeeProfile.TRUSTED_LAUNCH, tags={"onboard": "yes"})
    twin.create_vm(unique("plain"), resource_group=group, tee=TeeProfile.PLAIN)
    elsewhere = twin.create_vm(unique("c"), resource_group=other, tags={"onboard": "yes"})
    sub = twin.config.subscription_id
    scope = ScopeId.parse(f"/subscriptions/{sub}/resourceGroups/{group}")

    names = {f.vm_id.name for f in service.list_cvms([scope])}
    assert names == {tagged.name, untagged.name}  # CVMs only, this group only

    filtered = service.list_cvms([scope], TagFilter(name="ONBOARD", value="yes"))
    assert [f.vm_id.name for f in filtered] == [tagged.name]
    assert filtered[0].principal_id == tagged.principal_id

    # Overlapping scopes list each VM once; a subscription scope covers every group.
    both = service.list_cvms([ScopeId.parse(f"/subscriptions/{sub}"), scope], TagFilter(name="onboard", value="yes"))
    assert {tagged.name, elsewhere.name} <= {f.vm_id.name for f in both}
    assert len({str(f.vm_id).lower() for f in both}) == len(both)


def test_list_cvms_pages_through_many_vms(twin: Twin, service: VmService) -> None:
    group = unique("rg-many")
    created = {twin.create_vm(unique("m"), resource_group=group).name for _ in range(twin.config.arm_page_size + 5)}
    scope = ScopeId.parse(f"/subscriptions/{twin.config.subscription_id}/resourceGroups/{group}")
    assert {f.vm_id.name for f in service.list_cvms([scope])} == created


def test_vm_facts_fall_back_to_the_os_profile_and_ignore_user_assigned_identities() -> None:
    from azure.mgmt.compute.models import VirtualMachine

    from skr.services.vms import vm_facts

    rid = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v"
    linux = VirtualMachine(
        {
            "id": rid,
            "location": "westeurope",
            "identity": {"type": "UserAssigned", "principalId": None},
            "properties": {"osProfile": {"linuxConfiguration": {}}, "provisioningState": "Creating"},
        }
    )
    facts = vm_facts(linux)
    assert facts.os_type == "Linux" and facts.principal_id is None and facts.power_state is None
    assert facts.security_type is None and not facts.is_confidential
    windows = VirtualMachine({"properties": {"osProfile": {"windowsConfiguration": {}}}})
    assert vm_facts(windows, fallback_id=VmResourceId.parse(rid)).os_type == "Windows"
    with pytest.raises(ValueError, match="no resource id"):
        vm_facts(VirtualMachine({}))
