"""Onboarding outcomes end to end: events from the twin -> host -> real activities -> twin."""

from __future__ import annotations

from localdev.stack import Stack
from localdev.twin.model import TeeProfile
from skr.workflow.options import IN_VM_POLL_INTERVAL_SECONDS
from tests.e2e.helpers import RUN_STAGES, assignments_of, epoch, onboard, propagation, published_for
from tests.e2e.helpers import fault as fault_in
from tests.e2e.support import Ledger


def test_compliant_cvm_is_released_soon_after_rbac_takes_effect(stack: Stack, ledger: Ledger) -> None:
    vm, result = onboard(stack, "cvm-compliant")
    assert result["outcome"] == "released", result["detail"]
    [grant] = assignments_of(stack, vm)
    drawn = grant.effective_at - grant.created_at
    assert result["propagation_seconds"] >= drawn
    assert result["assignment"]["assignment_id"].lower().endswith(grant.name.lower())
    released = [i for i in ledger.releases() if f"/keys/{result['key']['name']}/" in str(i.extra.get("kid"))]
    assert len(released) == 1, "exactly one successful release"
    effect_to_release = released[0].at - grant.effective_at
    run_command_seconds = stack.twin.config.run_command_duration_seconds
    assert 0 <= effect_to_release <= IN_VM_POLL_INTERVAL_SECONDS + run_command_seconds
    assert result["report"]["outcome"] == "released" and result["report"]["key_thumbprint"]
    assert result["release_attempts"] >= 1 and result["key"]["version"]
    stages = result["stage_times"]
    assert list(stages) == [*RUN_STAGES, "reporting"]
    published = published_for(stack, vm)
    assert [e["type"] for e in published] == ["SkrOrchestrator.Onboarding.Succeeded"]
    assert published[0]["data"]["outcome"] == "released"
    stack.host.check_replay(stack.onboarding_id(vm))


def test_slow_propagation_spans_several_release_runs(stack: Stack, ledger: Ledger) -> None:
    with propagation(stack, "fixed:200"):
        vm, result = onboard(stack, "cvm-slow")
    assert result["outcome"] == "released", result["detail"]
    [grant] = assignments_of(stack, vm)
    assert result["release_attempts"] >= 2  # the first 90 s in-VM window cannot cover 200 s
    assert result["propagation_seconds"] >= 200
    released = [i for i in ledger.releases() if "/keys/cvm-cvm-slow/" in str(i.extra.get("kid"))]
    assert (
        released[0].at - grant.effective_at
        <= IN_VM_POLL_INTERVAL_SECONDS + stack.twin.config.run_command_duration_seconds
    )


def test_trusted_launch_vm_is_skipped(stack: Stack) -> None:
    vm, result = onboard(stack, "tl-vm", tee=TeeProfile.TRUSTED_LAUNCH)
    assert result["outcome"] == "skipped" and result["skip_reason"] == "not_confidential_vm"
    assert "TrustedLaunch" in result["detail"]
    assert assignments_of(stack, vm) == []


def test_vm_without_identity_fails_no_managed_identity(stack: Stack) -> None:
    _, result = onboard(stack, "cvm-noid", identity=False)
    assert result["outcome"] == "failed" and result["failure_code"] == "no_managed_identity"


def test_noncompliant_cvm_fails_policy_denied_naming_the_claim(stack: Stack) -> None:
    _, result = onboard(stack, "cvm-noncompliant", tee=TeeProfile.NONCOMPLIANT_CVM)
    assert result["outcome"] == "failed" and result["failure_code"] == "policy_denied"
    assert "x-ms-compliance-status" in result["detail"]
    assert result["report"]["outcome"] == "policy_denied"


def test_principal_not_found_for_the_first_minute_is_retried(stack: Stack) -> None:
    with fault_in(stack, "principal_not_found", duration=60.0) as fault:
        vm, result = onboard(stack, "cvm-pnf")
    assert fault.hits >= 1
    assert result["outcome"] == "released", result["detail"]
    waited = epoch(result["assignment_created_at"]) - epoch(result["stage_times"]["assigning_role"])
    assert waited >= 60  # the assignment could only be made once the fault window closed
    assert len(assignments_of(stack, vm)) == 1


def test_run_command_conflict_is_waited_out(stack: Stack) -> None:
    with fault_in(stack, "runcommand_conflict", count=3) as fault:
        _, result = onboard(stack, "cvm-conflict")
    assert result["outcome"] == "released", result["detail"]
    assert fault.hits == 3 and fault.count == 0
