"""One reconcile pass: which onboardings to (re)start and which assignments to remove.

Events are at-least-once and can be lost, so a periodic pass compares Azure (CVMs in scope,
release-role assignments) with the instances' results. Only assignments named by our own
deterministic scheme are ever removed: a release grant someone else made is not ours to touch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import Field

from skr.models import AssignmentRef, OffboardingRequest, SkipReason, TriggerSource, VmFacts, VmResourceId
from skr.naming import NamingError, offboarding_instance_id, onboarding_instance_id, role_assignment_name
from skr.workflow._base import Frozen
from skr.workflow.instances import InstanceSnapshot, StartDecision, VmIdentity, decide_onboarding, offboarding_request
from skr.workflow.scope import ScopeGuard


class PlannedStart(Frozen):
    facts: VmFacts
    decision: StartDecision


class PlannedOffboarding(Frozen):
    request: OffboardingRequest
    reason: str


class ReconcilePlan(Frozen):
    starts: list[PlannedStart] = Field(default_factory=list)
    offboardings: list[PlannedOffboarding] = Field(default_factory=list)
    deferred: int = 0  # starts beyond this pass's budget (the next pass picks them up)
    in_scope: int = 0
    up_to_date: int = 0
    skipped_out_of_scope: int = 0
    foreign_assignments: int = 0  # release grants not named by us: left alone
    unattributed: list[str] = Field(default_factory=list)  # our orphaned grants with no known VM


def is_ours(assignment: AssignmentRef) -> bool:
    """True when the assignment's name is the one our naming gives its (scope, role, principal)."""
    try:
        expected = role_assignment_name(assignment.scope, assignment.role_definition_id, assignment.principal_id)
    except (NamingError, ValueError):
        return False
    return expected == assignment.assignment_id.guid


def plan_reconcile(
    vms: Iterable[VmFacts],
    assignments: Iterable[AssignmentRef],
    onboardings: Mapping[str, InstanceSnapshot],
    *,
    guard: ScopeGuard,
    max_starts: int,
    disable_key_on_offboard: bool,
    busy_offboardings: frozenset[str] = frozenset(),
) -> ReconcilePlan:
    """Decide one pass.

    ``onboardings`` maps onboarding instance id -> snapshot (with output) for every onboarding the
    client knows; ``busy_offboardings`` are the ids of offboarding instances still in flight.
    """
    plan = ReconcilePlan()
    starts: list[PlannedStart] = []
    deferred = 0
    principals: set[str] = set()
    in_scope = 0
    skipped = 0
    up_to_date = 0
    for facts in vms:
        if guard.check_facts(facts) is not None:
            skipped += 1
            continue
        in_scope += 1
        if facts.principal_id:
            principals.add(facts.principal_id.lower())
        decision = decide_onboarding(
            onboardings.get(onboarding_instance_id(facts.vm_id)), VmIdentity.of_facts(facts), explicit=False
        )
        if not decision.starts:
            up_to_date += 1
        elif len(starts) < max_starts:
            starts.append(PlannedStart(facts=facts, decision=decision))
        else:
            deferred += 1

    by_assignment = _results_by_assignment(onboardings.values())
    offboardings: dict[VmResourceId, PlannedOffboarding] = {}
    foreign = 0
    unattributed: list[str] = []
    for assignment in assignments:
        if assignment.principal_id.lower() in principals:
            continue
        if not is_ours(assignment):
            foreign += 1
            continue
        snapshot = by_assignment.get(str(assignment.assignment_id).lower())
        result = snapshot.result if snapshot is not None else None
        if result is None:
            unattributed.append(str(assignment.assignment_id))
            continue
        if snapshot is not None and snapshot.active:
            continue  # its onboarding is still running; the next pass sees its result
        if offboarding_instance_id(result.vm_id) in busy_offboardings or result.vm_id in offboardings:
            continue
        request = offboarding_request(result, disable_key=disable_key_on_offboard, source=TriggerSource.RECONCILE)
        if assignment.assignment_id not in request.assignment_ids:
            request = request.model_copy(update={"assignment_ids": [*request.assignment_ids, assignment.assignment_id]})
        offboardings[result.vm_id] = PlannedOffboarding(
            request=request, reason=f"principal {assignment.principal_id} is no longer a VM in scope"
        )
    return plan.model_copy(
        update={
            "starts": starts,
            "offboardings": list(offboardings.values()),
            "deferred": deferred,
            "in_scope": in_scope,
            "up_to_date": up_to_date,
            "skipped_out_of_scope": skipped,
            "foreign_assignments": foreign,
            "unattributed": unattributed,
        }
    )


def _results_by_assignment(snapshots: Iterable[InstanceSnapshot]) -> dict[str, InstanceSnapshot]:
    out: dict[str, InstanceSnapshot] = {}
    for snapshot in snapshots:
        result = snapshot.result
        if result is not None and result.assignment is not None:
            out[str(result.assignment.assignment_id).lower()] = snapshot
    return out


__all__ = ["PlannedOffboarding", "PlannedStart", "ReconcilePlan", "SkipReason", "is_ours", "plan_reconcile"]
