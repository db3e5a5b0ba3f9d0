"""What a finished run means: in-VM outcomes to failure codes, outcomes to event types."""

from __future__ import annotations

from skr.models import FailureCode, Outcome, ReleaseReport

EVENT_TYPES: dict[Outcome, str] = {
    Outcome.RELEASED: "SkrOrchestrator.Onboarding.Succeeded",
    Outcome.FAILED: "SkrOrchestrator.Onboarding.Failed",
    Outcome.SKIPPED: "SkrOrchestrator.Onboarding.Skipped",
}
OFFBOARDING_EVENT_TYPE = "SkrOrchestrator.Offboarding.Completed"

# In-VM outcomes that end the onboarding (vm_scripts/README.md). Keyed by value so a script
# that reports an outcome newer than this table still maps to something specific.
_TERMINAL_REPORTS: dict[str, FailureCode] = {
    "policy_denied": FailureCode.POLICY_DENIED,
    "attestation_failed": FailureCode.ATTESTATION_FAILED,
    "key_not_found": FailureCode.KEY_NOT_FOUND,
    "not_exportable": FailureCode.NOT_EXPORTABLE,
    "http_error": FailureCode.HTTP_ERROR,
    "jws_invalid": FailureCode.ATTESTATION_FAILED,
    "invalid_parameters": FailureCode.RUN_COMMAND_FAILED,
    "internal_error": FailureCode.RUN_COMMAND_FAILED,
}
# In-VM outcomes worth another run: RBAC not effective yet, or IMDS having a bad moment.
WAIT_FOR_RBAC = "forbidden_by_rbac"
_FLAKY_REPORTS: dict[str, FailureCode] = {"imds_failed": FailureCode.IMDS_FAILED}


def event_type(outcome: Outcome) -> str:
    return EVENT_TYPES[outcome]


def is_released(report: ReleaseReport) -> bool:
    return report.outcome.value == "released"


def is_waiting_for_rbac(report: ReleaseReport) -> bool:
    return report.outcome.value == WAIT_FOR_RBAC


def flaky_failure(report: ReleaseReport) -> FailureCode | None:
    """The failure code if this outcome may succeed on another run (bounded retries), else None."""
    return _FLAKY_REPORTS.get(report.outcome.value)


def terminal_failure(report: ReleaseReport) -> FailureCode:
    """The failure code for an outcome no re-run can fix (policy, attestation, key)."""
    return _TERMINAL_REPORTS.get(report.outcome.value, FailureCode.RUN_COMMAND_FAILED)


def describe_report(report: ReleaseReport) -> str:
    """One line for results and status: outcome, error code, HTTP status and the script's detail.

    For ``policy_denied`` the detail names the unmet claim (the script copies Key Vault's reason).
    """
    parts = [f"in-VM release: {report.outcome.value}"]
    if report.error_code:
        parts.append(f"error {report.error_code}")
    if report.http_status is not None:
        parts.append(f"HTTP {report.http_status}")
    text = ", ".join(parts)
    if report.detail:
        text += f": {report.detail}"
    return text
