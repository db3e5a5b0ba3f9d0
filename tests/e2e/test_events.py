"""Event handling end to end: duplicates, deletes, dropped events and reconcile, identity changes, bad events."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from localdev.stack import Stack
from localdev.twin.model import SimVm
from tests.e2e.helpers import assignments_of, input_of, onboard, published_for


def held_event(stack: Stack, create: Any) -> tuple[Any, dict[str, Any]]:
    """Run ``create()`` with delivery held; return its result and the VM event the twin emitted."""
    stack.twin.events.hold()
    before = len(stack.twin.events.emitted)
    try:
        made = create()
    except BaseException:
        stack.twin.events.release()
        raise
    new = stack.twin.events.emitted[before:]
    vm_events = [e for e in new if e["data"]["operationName"].lower().startswith("microsoft.compute/virtualmachines/")]
    assert len(vm_events) == 1, new
    return made, vm_events[0]


def deliver_concurrently(stack: Stack, event: dict[str, Any], copies: int) -> list[int]:
    with ThreadPoolExecutor(max_workers=copies) as pool:
        results = list(pool.map(lambda _: stack.deliver_events([copy.deepcopy(event)]), range(copies)))
    return [r.status for r in results]


def calls_for(stack: Stack, name: str, vm: SimVm) -> int:
    instance = stack.onboarding_id(vm)
    return sum(1 for c in stack.host.activity_calls(name) if c.instance_id == instance)


def test_five_duplicates_of_each_event_give_one_instance_and_one_assignment(stack: Stack) -> None:
    vm, write = held_event(stack, lambda: stack.twin.create_vm("cvm-dup"))
    assert deliver_concurrently(stack, write, 5) == [202] * 5
    assert stack.twin.events.release() == 1  # the twin's own delivery makes a sixth copy
    status = stack.wait_for_onboarding(vm)
    assert status.output["outcome"] == "released", status.output["detail"]
    stack.settle()
    # Late duplicates (after it finished) do not run it again: the VM's identity is unchanged.
    assert deliver_concurrently(stack, write, 5) == [202] * 5
    stack.settle()
    assert calls_for(stack, "assign_release_role", vm) == 1
    assert calls_for(stack, "ensure_key", vm) == 1
    assert len(assignments_of(stack, vm)) == 1
    assert [e["type"] for e in published_for(stack, vm)] == ["SkrOrchestrator.Onboarding.Succeeded"]
    assert [s.instance_id for s in stack.host.instances(prefix="onboard-cvm-dup-")] == [stack.onboarding_id(vm)]

    _, delete = held_event(stack, lambda: stack.twin.delete_vm(vm.resource_id))
    assert deliver_concurrently(stack, delete, 5) == [202] * 5
    stack.twin.events.release()
    off = stack.wait_for_offboarding(vm)
    stack.settle()
    assert off.runtime_status == "Completed" and len(off.output["removed_assignments"]) == 1
    assert assignments_of(stack, vm) == []
    kinds = [e["type"] for e in published_for(stack, vm)]
    assert kinds.count("SkrOrchestrator.Offboarding.Completed") == 1
    assert [s.instance_id for s in stack.host.instances(prefix="offboard-cvm-dup-")] == [stack.offboarding_id(vm)]


def test_a_delete_event_removes_the_assignment(stack: Stack) -> None:
    vm, result = onboard(stack, "cvm-delete")
    assert result["outcome"] == "released"
    assert len(assignments_of(stack, vm)) == 1
    stack.twin.delete_vm(vm.resource_id)
    off = stack.wait_for_offboarding(vm)
    assert off.output["removed_assignments"] == [result["assignment"]["assignment_id"]]
    assert assignments_of(stack, vm) == []
    assert off.output["key_disabled"] is False  # SKR_DISABLE_KEY_ON_OFFBOARD is off: the key stays
    key = stack.twin.vault().keys[result["key"]["name"].lower()]
    assert key.latest.enabled


def test_a_cvm_whose_event_was_dropped_is_onboarded_by_reconcile(stack: Stack) -> None:
    stack.twin.events.drop_next(1)
    vm = stack.twin.create_vm("cvm-dropped")
    stack.settle()
    assert stack.host.get_status(stack.onboarding_id(vm)) is None
    assert stack.run_reconcile().status < 300
    status = stack.wait_for_onboarding(vm)
    assert status.output["outcome"] == "released", status.output["detail"]
    assert input_of(status)["request"]["source"] == "reconcile"
    # A second pass finds nothing to do.
    stack.settle()
    assert stack.run_reconcile().status < 300
    stack.settle()
    assert calls_for(stack, "assign_release_role", vm) == 1


def test_reconcile_offboards_a_deleted_vm_whose_delete_event_was_lost(stack: Stack) -> None:
    vm, result = onboard(stack, "cvm-lost-delete")
    assert result["outcome"] == "released"
    stack.twin.delete_vm(vm.resource_id, emit_event=False)
    stack.settle()
    assert stack.host.get_status(stack.offboarding_id(vm)) is None
    assert len(assignments_of(stack, vm)) == 1  # nobody told us yet
    assert stack.run_reconcile().status < 300
    off = stack.wait_for_offboarding(vm)
    assert off.output["removed_assignments"] == [result["assignment"]["assignment_id"]]
    assert input_of(off)["request"]["source"] == "reconcile"
    assert assignments_of(stack, vm) == []


def test_a_recreated_vm_with_a_new_identity_is_onboarded_again_and_the_old_grant_removed(stack: Stack) -> None:
    first, result = onboard(stack, "cvm-reborn")
    assert result["outcome"] == "released"
    stack.twin.delete_vm(first.resource_id, emit_event=False)  # the delete event never arrives
    stack.settle()
    second = stack.twin.create_vm("cvm-reborn")
    assert second.principal_id != first.principal_id
    stack.settle()
    status = stack.wait_for_onboarding(second)
    assert status.output["outcome"] == "released", status.output["detail"]
    assert status.output["principal_id"] == second.principal_id
    assert input_of(status)["supersedes"]["principal_id"] == first.principal_id
    assert assignments_of(stack, first) == []
    assert len(assignments_of(stack, second)) == 1


def test_irrelevant_and_malformed_events_start_nothing_and_never_fail_the_trigger(stack: Stack) -> None:
    vm = stack.twin.vm_resource_id("cvm-ghost")
    good = {
        "id": "e-1",
        "topic": f"/subscriptions/{stack.twin.config.subscription_id}",
        "subject": vm,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": "2024-05-01T12:00:00Z",
        "dataVersion": "2",
        "data": {"operationName": "Microsoft.Compute/virtualMachines/write", "resourceUri": vm, "status": "Succeeded"},
    }
    bad: list[dict[str, Any]] = []
    for change in (
        {"data": "not an object"},
        {"data": {"resourceUri": vm}},  # no operationName
        {"subject": "/subscriptions/x/whatever", "data": {**good["data"], "resourceUri": "/nope"}},
        {"data": {**good["data"], "operationName": "Microsoft.Compute/virtualMachines/runCommands/write"}},
        {"data": {**good["data"], "operationName": "Microsoft.Authorization/roleAssignments/write"}},
        {"eventType": "Microsoft.Resources.ResourceActionSuccess"},
        {"subject": stack.twin.vm_resource_id("another")},  # disagrees with data.resourceUri
    ):
        bad.append({**copy.deepcopy(good), **change})
    out_of_scope = copy.deepcopy(good)
    other = "/subscriptions/00000000-0000-0000-0000-00000000beef/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x"
    out_of_scope["subject"] = out_of_scope["data"]["resourceUri"] = other
    response = stack.deliver_events([*bad, out_of_scope])
    assert response.status == 202
    stack.settle()
    assert stack.host.instances(prefix="onboard-cvm-ghost-") == []
    assert stack.host.instances(prefix="onboard-x-") == []
    warnings = [e for e in stack.host.logs(level="WARNING") if "malformed event" in str(e)]
    assert len(warnings) >= 4


def test_cloudevents_delivery_is_understood_too(stack: Stack) -> None:
    url = stack.twin.events.config.url
    stack.twin.events.configure(schema="cloudevents")
    try:
        vm, result = onboard(stack, "cvm-cloudevents")
        assert result["outcome"] == "released", result["detail"]
        stack.twin.delete_vm(vm.resource_id)
        off = stack.wait_for_offboarding(vm)
        assert off.output["removed_assignments"] == [result["assignment"]["assignment_id"]]
    finally:
        stack.twin.events.configure(schema="eventgrid", url=url)
