from __future__ import annotations

from datetime import timedelta

import pytest

from skr.models import CustomStatus, FailureCode, Outcome, ReleaseReport, SkipReason, Stage
from skr.workflow.commands import CommandPoll, Verdict, judge
from skr.workflow.outcomes import describe_report, event_type
from skr.workflow.progress import Progress, clip
from skr.workflow.result import Finish, ResultDraft
from tests.unit.workflow_factories import T0, assignment, facts, principal, vm_id


def report(outcome: str, **extra: object) -> ReleaseReport:
    return ReleaseReport.model_validate({"outcome": outcome, **extra})


def test_judge_maps_every_in_vm_outcome() -> None:
    finished = "succeeded"
    assert judge(CommandPoll(state=finished, report=report("released"))) == (Verdict.RELEASED, None)
    assert judge(CommandPoll(state="failed", report=report("forbidden_by_rbac"))) == (Verdict.WAIT_FOR_RBAC, None)
    assert judge(CommandPoll(state="failed", report=report("imds_failed"))) == (Verdict.RETRY, FailureCode.IMDS_FAILED)
    terminal = {
        "policy_denied": FailureCode.POLICY_DENIED,
        "attestation_failed": FailureCode.ATTESTATION_FAILED,
        "key_not_found": FailureCode.KEY_NOT_FOUND,
        "not_exportable": FailureCode.NOT_EXPORTABLE,
        "http_error": FailureCode.HTTP_ERROR,
    }
    for outcome, code in terminal.items():
        assert judge(CommandPoll(state="failed", report=report(outcome))) == (Verdict.FAIL, code)


def test_judge_without_a_report_is_a_command_failure() -> None:
    assert judge(CommandPoll(state="timed_out")) == (Verdict.RETRY, FailureCode.RUN_COMMAND_TIMEOUT)
    assert judge(CommandPoll(state="failed", detail="agent crashed")) == (Verdict.RETRY, FailureCode.RUN_COMMAND_FAILED)
    assert not CommandPoll(state="running").finished and CommandPoll(state="Succeeded").finished


def test_describe_report_names_the_unmet_claim_from_the_script() -> None:
    text = describe_report(
        report("policy_denied", http_status=403, error_code="Forbidden", detail="unmet claim x-ms-compliance-status")
    )
    assert "policy_denied" in text and "HTTP 403" in text and "x-ms-compliance-status" in text


def test_event_types() -> None:
    assert event_type(Outcome.RELEASED) == "SkrOrchestrator.Onboarding.Succeeded"
    assert event_type(Outcome.FAILED).endswith(".Failed") and event_type(Outcome.SKIPPED).endswith(".Skipped")


def test_progress_tracks_first_entry_and_builds_valid_status() -> None:
    progress = Progress(T0)
    with pytest.raises(RuntimeError):
        progress.status(T0)
    progress.enter(Stage.INSPECTING_VM, T0)
    progress.enter(Stage.RELEASING, T0 + timedelta(seconds=5))
    progress.enter(Stage.RELEASING, T0 + timedelta(seconds=9))
    status = progress.status(
        T0 + timedelta(seconds=20), attempt=2, detail="x" * 2000, assigned_at=T0 + timedelta(seconds=4)
    )
    parsed = CustomStatus.from_json(status)
    assert parsed.stage is Stage.RELEASING and parsed.since == T0 + timedelta(seconds=5)
    assert parsed.seconds_since_assignment == 16 and parsed.attempt == 2 and len(parsed.detail or "") == 512
    assert progress.stage_times == {Stage.INSPECTING_VM: T0, Stage.RELEASING: T0 + timedelta(seconds=5)}
    assert clip(None) is None and clip("short") == "short"


def test_result_draft_released_and_propagation() -> None:
    f = facts()
    draft = ResultDraft(vm_id=f.vm_id, started_at=T0, facts=f, assignment=assignment(principal(1)))
    draft.assignment_created_at = T0 + timedelta(seconds=10)
    draft.released_at = T0 + timedelta(seconds=55.5)
    built = draft.build(None, T0 + timedelta(seconds=60))
    assert built.outcome is Outcome.RELEASED and built.propagation_seconds == 45.5
    assert built.principal_id == f.principal_id and built.unique_vm_id == f.unique_id


def test_result_draft_failure_and_skip() -> None:
    draft = ResultDraft(vm_id=vm_id(), started_at=T0)
    failed = draft.build(Finish.failed(FailureCode.NO_MANAGED_IDENTITY, "no identity"), T0)
    assert failed.failure_code is FailureCode.NO_MANAGED_IDENTITY and failed.propagation_seconds is None
    skipped = draft.build(Finish.skipped(SkipReason.NOT_CONFIDENTIAL_VM, "TL"), T0)
    assert skipped.outcome is Outcome.SKIPPED and skipped.skip_reason is SkipReason.NOT_CONFIDENTIAL_VM
