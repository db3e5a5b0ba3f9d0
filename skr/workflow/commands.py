"""The release run command as the orchestrator sees it: poll states and what each result means."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from skr.models import FailureCode, ReleaseReport
from skr.workflow.outcomes import flaky_failure, is_released, is_waiting_for_rbac, terminal_failure

FINISHED_STATES = frozenset({"succeeded", "failed", "timed_out", "canceled"})


class CommandPoll(BaseModel):
    """Value of ``get_release_command`` (team/ACTIVITIES.md); the raw output is never in it."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    state: str
    exit_code: int | None = None
    report: ReleaseReport | None = None
    detail: str | None = None

    @property
    def finished(self) -> bool:
        return self.state.lower() in FINISHED_STATES

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Verdict(StrEnum):
    RELEASED = "released"
    WAIT_FOR_RBAC = "wait_for_rbac"  # the grant is not effective yet: run again after a short wait
    RETRY = "retry"  # the command or IMDS misbehaved: run again, a bounded number of times
    FAIL = "fail"  # nothing a re-run can fix


def judge(poll: CommandPoll) -> tuple[Verdict, FailureCode | None]:
    """What a finished command means for the onboarding."""
    report = poll.report
    if report is None:
        code = FailureCode.RUN_COMMAND_TIMEOUT if poll.state.lower() == "timed_out" else FailureCode.RUN_COMMAND_FAILED
        return Verdict.RETRY, code
    if is_released(report):
        return Verdict.RELEASED, None
    if is_waiting_for_rbac(report):
        return Verdict.WAIT_FOR_RBAC, None
    flaky = flaky_failure(report)
    if flaky is not None:
        return Verdict.RETRY, flaky
    return Verdict.FAIL, terminal_failure(report)
