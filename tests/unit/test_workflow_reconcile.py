from __future__ import annotations

from skr.models import FailureCode, Outcome
from skr.naming import offboarding_instance_id, onboarding_instance_id
from skr.workflow.instances import StartAction
from skr.workflow.reconcile import is_ours, plan_reconcile
from tests.unit.workflow_factories import assignment, facts, guard, principal, result, snapshot


def test_is_ours_checks_the_deterministic_name() -> None:
    assert is_ours(assignment(principal(1)))
    assert not is_ours(assignment(principal(1), ours=False))


def test_missing_and_changed_vms_are_started_up_to_the_budget() -> None:
    done = facts("done", n=1)
    changed_before = facts("changed", n=2)
    changed_now = facts("changed", n=3)
    missing = [facts(f"new{i}", n=10 + i) for i in range(3)]
    onboardings = {
        onboarding_instance_id(done.vm_id): snapshot(done.vm_id, output=result(done)),
        onboarding_instance_id(changed_now.vm_id): snapshot(changed_now.vm_id, output=result(changed_before)),
    }
    plan = plan_reconcile(
        [done, changed_now, *missing], [], onboardings, guard=guard(), max_starts=3, disable_key_on_offboard=False
    )
    assert plan.in_scope == 5 and plan.up_to_date == 1 and plan.deferred == 1
    started = {p.facts.vm_id.name: p.decision for p in plan.starts}
    assert started["changed"].action is StartAction.RESTART and started["changed"].supersedes is not None
    assert sum(1 for d in started.values() if d.action is StartAction.START) == 2


def test_out_of_scope_and_non_cvm_are_not_started() -> None:
    tl = facts("tl", n=1, security="TrustedLaunch")
    plan = plan_reconcile([tl], [], {}, guard=guard(tag_name="skr"), max_starts=10, disable_key_on_offboard=False)
    assert plan.starts == [] and plan.skipped_out_of_scope == 1


def test_orphaned_grants_are_offboarded_from_the_recorded_result() -> None:
    gone = facts("gone", n=5)
    live = facts("live", n=6)
    gone_result = result(gone)
    grants = [gone_result.assignment, result(live).assignment, assignment(principal(7), ours=False)]
    onboardings = {
        onboarding_instance_id(gone.vm_id): snapshot(gone.vm_id, output=gone_result),
        onboarding_instance_id(live.vm_id): snapshot(live.vm_id, output=result(live)),
    }
    plan = plan_reconcile(
        [live],
        grants,
        onboardings,
        guard=guard(),
        max_starts=10,
        disable_key_on_offboard=True,  # type: ignore[arg-type]
    )
    assert [o.request.vm_id for o in plan.offboardings] == [gone.vm_id]
    request = plan.offboardings[0].request
    assert request.assignment_ids == [gone_result.assignment.assignment_id]  # type: ignore[union-attr]
    assert request.disable_key and request.principal_id == gone.principal_id
    assert plan.foreign_assignments == 1 and plan.unattributed == []


def test_unattributed_and_busy_orphans_are_left_for_later() -> None:
    gone = facts("gone", n=5)
    stray = assignment(principal(8), "cvm-stray")
    busy_result = result(gone)
    plan = plan_reconcile(
        [],
        [stray, busy_result.assignment],  # type: ignore[list-item]
        {onboarding_instance_id(gone.vm_id): snapshot(gone.vm_id, output=busy_result)},
        guard=guard(),
        max_starts=10,
        disable_key_on_offboard=False,
        busy_offboardings=frozenset({offboarding_instance_id(gone.vm_id)}),
    )
    assert plan.offboardings == [] and plan.unattributed == [str(stray.assignment_id)]


def test_failed_onboarding_with_final_code_is_not_restarted_by_reconcile() -> None:
    f = facts()
    failed = result(f, Outcome.FAILED, code=FailureCode.POLICY_DENIED)
    plan = plan_reconcile(
        [f],
        [failed.assignment],
        {onboarding_instance_id(f.vm_id): snapshot(f.vm_id, output=failed)},  # type: ignore[list-item]
        guard=guard(),
        max_starts=10,
        disable_key_on_offboard=False,
    )
    assert plan.starts == [] and plan.offboardings == [] and plan.up_to_date == 1
