from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from skr.workflow.events import EventAction, classify_event
from tests.unit.workflow_factories import SUB, vm_id

VM = str(vm_id())


def write_event(**data_overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "authorization": {"scope": VM, "action": "Microsoft.Compute/virtualMachines/write"},
        "correlationId": "c0ffee",
        "resourceProvider": "Microsoft.Compute",
        "resourceUri": VM,
        "operationName": "Microsoft.Compute/virtualMachines/write",
        "status": "Succeeded",
        "subscriptionId": SUB,
    }
    data.update(data_overrides)
    return {
        "id": "e1",
        "topic": f"/subscriptions/{SUB}",
        "subject": VM,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2024-05-01T12:00:00Z",
        "dataVersion": "2",
        "data": data,
    }


def delete_event() -> dict[str, Any]:
    event = write_event(operationName="Microsoft.Compute/virtualMachines/delete")
    event["eventType"] = "Microsoft.Resources.ResourceDeleteSuccess"
    return event


def test_vm_write_onboards_with_parsed_id_and_correlation() -> None:
    decision = classify_event(write_event())
    assert decision.action is EventAction.ONBOARD
    assert decision.vm_id == vm_id()
    assert decision.correlation_id == "c0ffee" and decision.event_id == "e1"


def test_vm_delete_offboards() -> None:
    decision = classify_event(delete_event())
    assert decision.action is EventAction.OFFBOARD and decision.vm_id == vm_id()


def test_casing_of_type_operation_and_ids_does_not_matter() -> None:
    event = write_event(
        operationName="MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE",
        resourceUri=VM.replace("resourceGroups", "resourcegroups"),
    )
    event["eventType"] = "microsoft.resources.resourcewritesuccess"
    assert classify_event(event).action is EventAction.ONBOARD


def test_our_own_child_and_role_writes_are_ignored() -> None:
    run_command = write_event(
        operationName="Microsoft.Compute/virtualMachines/runCommands/write",
        resourceUri=VM + "/runCommands/skr-release-001",
    )
    run_command["subject"] = VM + "/runCommands/skr-release-001"
    role = write_event(operationName="Microsoft.Authorization/roleAssignments/write")
    for event in (run_command, role):
        decision = classify_event(event)
        assert decision.action is EventAction.IGNORE and "not a VM write" in decision.reason


def test_other_event_types_and_validation_are_ignored() -> None:
    action = write_event()
    action["eventType"] = "Microsoft.Resources.ResourceActionSuccess"
    validation = {
        "id": "v",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "data": {"validationCode": "x"},
    }
    failed = write_event()
    failed["eventType"] = "Microsoft.Resources.ResourceWriteFailure"
    for event in (action, validation, failed):
        assert classify_event(event).action is EventAction.IGNORE


def test_write_whose_status_is_not_succeeded_is_ignored() -> None:
    assert classify_event(write_event(status="Failed")).action is EventAction.IGNORE


def test_cloud_event_schema_is_understood() -> None:
    event = write_event()
    cloud = {
        "specversion": "1.0",
        "type": event["eventType"],
        "source": event["topic"],
        "id": "c1",
        "subject": VM,
        "data": event["data"],
    }
    assert classify_event(cloud).action is EventAction.ONBOARD


def test_malformed_events_are_reported_not_raised() -> None:
    no_data = write_event()
    no_data["data"] = "nope"
    no_type = write_event()
    del no_type["eventType"]
    bad_uri = write_event(
        resourceUri="/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x"
    )
    mismatch = write_event()
    mismatch["subject"] = str(vm_id("other"))
    no_operation = write_event()
    del no_operation["data"]["operationName"]
    no_resource = write_event()
    del no_resource["subject"]
    del no_resource["data"]["resourceUri"]
    cases = {
        "no data": no_data,
        "no type": no_type,
        "bad uri": bad_uri,
        "mismatch": mismatch,
        "no operation": no_operation,
        "no resource": no_resource,
    }
    for name, event in cases.items():
        decision = classify_event(event)
        assert decision.action is EventAction.MALFORMED, name
        assert decision.vm_id is None and decision.reason, name
    assert classify_event([1, 2]).action is EventAction.MALFORMED  # type: ignore[arg-type]


def test_malformed_reason_does_not_echo_unbounded_input() -> None:
    event = write_event(resourceUri="/" + "x" * 5000)
    decision = classify_event(event)
    assert decision.action is EventAction.MALFORMED and len(decision.reason) <= 400


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["id", "eventType", "type", "subject", "data", "topic"]), json_values))
def test_arbitrary_payloads_never_raise(event: dict[str, Any]) -> None:
    assert classify_event(event).action in set(EventAction)


@given(st.sampled_from(["eventType", "subject", "data"]), json_values)
def test_corrupting_one_field_never_onboards_another_vm(field: str, value: Any) -> None:
    event = copy.deepcopy(write_event())
    event[field] = value
    decision = classify_event(event)
    if decision.action in (EventAction.ONBOARD, EventAction.OFFBOARD):
        assert decision.vm_id == vm_id()
