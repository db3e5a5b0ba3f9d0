from __future__ import annotations

import json

from skr.models import FailureCode, OnboardingRequest, Outcome, SkipReason, Stage, TriggerSource
from skr.workflow.inputs import OffboardInput, OnboardInput
from skr.workflow.instances import InstanceSnapshot, StartAction, VmIdentity, decide_onboarding, offboarding_request
from skr.workflow.options import OnboardingOptions
from tests.unit.workflow_factories import facts, guard, key, result, snapshot, vm_id


def test_no_instance_starts() -> None:
    assert decide_onboarding(None, None, explicit=False).action is StartAction.START


def test_active_instances_are_never_started_twice() -> None:
    for status in ("Pending", "Running", "ContinuedAsNew", "Suspended"):
        for explicit in (False, True):
            decision = decide_onboarding(snapshot(vm_id(), status), None, explicit=explicit)
            assert decision.action is StartAction.SKIP_RUNNING and not decision.starts


def test_completed_with_same_identity_is_left_alone() -> None:
    f = facts()
    decision = decide_onboarding(snapshot(f.vm_id, output=result(f)), VmIdentity.of_facts(f), explicit=False)
    assert decision.action is StartAction.SKIP_DONE
    # Identity unknown (the VM could not be read): leave it, reconcile will look again.
    assert decide_onboarding(snapshot(f.vm_id, output=result(f)), None, explicit=False).action is StartAction.SKIP_DONE


def test_new_identity_restarts_and_supersedes_the_old_assignment() -> None:
    old = facts(n=1)
    new = facts(n=2)
    decision = decide_onboarding(snapshot(old.vm_id, output=result(old)), VmIdentity.of_facts(new), explicit=False)
    assert decision.action is StartAction.RESTART and decision.reason == "VM identity changed"
    assert decision.supersedes is not None
    assert decision.supersedes.principal_id == old.principal_id
    assert decision.supersedes.assignment_ids == [result(old).assignment.assignment_id]  # type: ignore[union-attr]


def test_recreated_vm_same_principal_different_vmid_restarts_without_superseding() -> None:
    old = facts(n=1)
    recreated = old.model_copy(update={"unique_id": "22222222-0000-0000-0000-000000000001"})
    decision = decide_onboarding(
        snapshot(old.vm_id, output=result(old)), VmIdentity.of_facts(recreated), explicit=False
    )
    assert decision.action is StartAction.RESTART and decision.supersedes is None


def test_identity_added_after_no_managed_identity_restarts() -> None:
    before = facts(principal_id=None)
    failed = result(before, Outcome.FAILED, code=FailureCode.NO_MANAGED_IDENTITY, with_assignment=False)
    decision = decide_onboarding(snapshot(before.vm_id, output=failed), VmIdentity.of_facts(facts()), explicit=False)
    assert decision.action is StartAction.RESTART


def test_failures_a_vm_write_can_cure_restart_others_do_not() -> None:
    f = facts()
    same = VmIdentity.of_facts(f)
    curable = result(f, Outcome.FAILED, code=FailureCode.VM_NOT_READY)
    final = result(f, Outcome.FAILED, code=FailureCode.POLICY_DENIED)
    assert decide_onboarding(snapshot(f.vm_id, output=curable), same, explicit=False).action is StartAction.RESTART
    assert decide_onboarding(snapshot(f.vm_id, output=final), same, explicit=False).action is StartAction.SKIP_DONE
    assert decide_onboarding(snapshot(f.vm_id, output=final), same, explicit=True).action is StartAction.RESTART


def test_crashed_or_terminated_instances_restart() -> None:
    for status in ("Failed", "Terminated"):
        decision = decide_onboarding(snapshot(vm_id(), status), None, explicit=False)
        assert decision.action is StartAction.RESTART and status in decision.reason


def test_snapshot_reads_stage_outcome_and_vm_id() -> None:
    f = facts()
    done = snapshot(f.vm_id, output=result(f), stage="completed")
    assert done.stage is Stage.COMPLETED and done.outcome is Outcome.RELEASED and done.vm_id == f.vm_id
    crashed = snapshot(f.vm_id, "Failed")
    assert crashed.outcome is Outcome.FAILED and crashed.result is None
    running = InstanceSnapshot(
        instance_id="x",
        runtime_status="Running",
        custom_status={"stage": "bogus"},
        input={"request": {"vm_id": str(f.vm_id)}},
    )
    assert running.stage is None and running.outcome is None and running.vm_id == f.vm_id
    garbage = InstanceSnapshot(instance_id="y", runtime_status="Completed", output={"not": "a result"})
    assert garbage.result is None and garbage.outcome is None and garbage.vm_id is None


def test_offboarding_request_disables_only_a_per_vm_key_when_asked() -> None:
    f = facts()
    own = result(f)
    request = offboarding_request(own, disable_key=True, source=TriggerSource.EVENT)
    assert request.disable_key and request.principal_id == f.principal_id
    assert request.assignment_ids == [own.assignment.assignment_id]  # type: ignore[union-attr]
    assert not offboarding_request(own, disable_key=False, source=TriggerSource.EVENT).disable_key
    shared = own.model_copy(update={"key": key(shared=True)})
    assert not offboarding_request(shared, disable_key=True, source=TriggerSource.EVENT).disable_key
    skipped = result(f, Outcome.SKIPPED, skip=SkipReason.NOT_CONFIDENTIAL_VM, with_assignment=False)
    assert offboarding_request(skipped, disable_key=False, source=TriggerSource.HTTP).assignment_ids == []


def test_orchestration_inputs_round_trip_as_small_json() -> None:
    old = facts(n=1)
    supersedes = decide_onboarding(
        snapshot(old.vm_id, output=result(old)), VmIdentity.of_facts(facts(n=2)), explicit=False
    )
    onboard = OnboardInput(
        request=OnboardingRequest(vm_id=old.vm_id, key_name="k"),
        options=OnboardingOptions(scope=guard()),
        supersedes=supersedes.supersedes,
    )
    text = json.dumps(onboard.to_json())
    assert OnboardInput.from_json(json.loads(text)) == onboard and len(text) < 4096
    offboard = OffboardInput(request=offboarding_request(result(old), disable_key=True, source=TriggerSource.EVENT))
    assert OffboardInput.from_json(json.loads(json.dumps(offboard.to_json()))) == offboard
