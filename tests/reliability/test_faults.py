"""The onboarding under Azure faults (twin fault injection), host crashes and event disorder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.stack import Stack, start_stack
from localdev.twin.core import TwinConfig
from tests.e2e.helpers import assignments_of, epoch, onboard, published_for, replay_guard
from tests.e2e.helpers import fault as fault_in


@pytest.fixture(autouse=True)
def replays_identically(stack: Stack) -> Iterator[None]:
    """After each test, every instance it finished still replays to the same actions (determinism)."""
    with replay_guard(stack):
        yield


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = Path(tmp_path_factory.mktemp("reliability")) / "store.sqlite"
    with start_stack(
        twin_config=TwinConfig(propagation="uniform:5:40", seed=21),
        db_path=db,
        settings={"SKR_RUN_COMMAND_TIMEOUT_SECONDS": "180"},
    ) as running:
        yield running


def timers_of(stack: Stack, instance_id: str) -> list[float]:
    """Durations (seconds) of the durable timers an instance created, from its history."""
    created = [e for e in stack.host.history(instance_id) if e.get("EventType") == 10]  # TimerCreated
    return [epoch(e["FireAt"].replace("Z", "+00:00")) - epoch(e["Timestamp"].replace("Z", "+00:00")) for e in created]


def test_throttled_role_assignment_waits_out_retry_after_on_durable_timers(stack: Stack) -> None:
    with fault_in(stack, "throttle_storm", count=2, retry_after=45, method="PUT", path="roleAssignments") as fault:
        vm, result = onboard(stack, "cvm-throttled")
    assert fault.hits == 2
    assert result["outcome"] == "released", result["detail"]
    waited = epoch(result["assignment_created_at"]) - epoch(result["stage_times"]["assigning_role"])
    assert waited >= 90  # two 45 s Retry-After waits, honoured in full
    assert [t for t in timers_of(stack, stack.onboarding_id(vm)) if t >= 45][:2] == [45, 45]
    assert len(assignments_of(stack, vm)) == 1


def test_transient_key_vault_errors_are_retried(stack: Stack) -> None:
    with fault_in(
        stack, "error", count=3, status=503, service="keyvault", method="POST", path="/keys/.*/create"
    ) as fault:
        _, result = onboard(stack, "cvm-kv-503")
    assert fault.hits == 3
    assert result["outcome"] == "released", result["detail"]


def test_a_hung_run_command_times_out_and_the_next_run_releases(stack: Stack) -> None:
    with fault_in(stack, "runcommand_hang", count=1) as fault:
        _, result = onboard(stack, "cvm-hang")
    assert fault.hits == 1
    assert result["outcome"] == "released", result["detail"]
    assert result["release_attempts"] >= 2
    assert epoch(result["released_at"]) - epoch(result["assignment_created_at"]) >= 180  # waited out the hang


def test_vm_deleted_during_the_release_fails_vm_deleted_and_removes_its_grant(stack: Stack) -> None:
    with fault_in(stack, "vm_delete_during_run", count=1, seconds=5) as fault:
        vm, result = onboard(stack, "cvm-vanishing")
    assert fault.hits == 1
    assert result["outcome"] == "failed" and result["failure_code"] == "vm_deleted", result["detail"]
    stack.settle()
    assert assignments_of(stack, vm) == []
    assert [e["type"] for e in published_for(stack, vm)] == ["SkrOrchestrator.Onboarding.Failed"]


def test_a_persistent_maa_outage_fails_attestation(stack: Stack) -> None:
    with fault_in(stack, "maa_outage", duration=100_000) as fault:
        _, result = onboard(stack, "cvm-no-maa")
    assert fault.hits >= 1
    assert result["outcome"] == "failed" and result["failure_code"] == "attestation_failed", result["detail"]


def test_events_out_of_order_leave_no_grant_behind(stack: Stack) -> None:
    stack.twin.events.hold()
    try:
        vm = stack.twin.create_vm("cvm-short-lived")
        stack.twin.delete_vm(vm.resource_id)
    finally:
        stack.twin.events.release("reverse")  # the delete arrives before the create
    status = stack.wait_for_onboarding(vm)
    stack.settle()
    assert status.output["outcome"] == "failed" and status.output["failure_code"] == "vm_not_found"
    assert assignments_of(stack, vm) == []


def test_a_host_killed_mid_release_resumes_from_its_store(stack: Stack) -> None:
    vm = stack.twin.create_vm("cvm-crash")
    iid = stack.onboarding_id(vm)

    def releasing() -> bool:
        row = stack.host.engine.store.get(iid)
        return row is not None and '"releasing"' in (row.custom_status or "")

    stack.host.wait_until(releasing, timeout=60)
    stack.restart_host()
    status = stack.wait_for_onboarding(vm)
    assert status.output["outcome"] == "released", status.output["detail"]
    stack.settle()
    assert len(assignments_of(stack, vm)) == 1
    stack.host.check_replay(iid)


def test_a_fleet_onboards_in_parallel(stack: Stack) -> None:
    vms = [stack.twin.create_vm(f"fleet-{n:02d}") for n in range(12)]
    results = [stack.wait_for_onboarding(vm).output for vm in vms]
    assert [r["outcome"] for r in results] == ["released"] * len(vms)
    assert all(len(assignments_of(stack, vm)) == 1 for vm in vms)
    stack.settle()
