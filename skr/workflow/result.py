"""The onboarding result as it accumulates during a run, and the final ``OnboardingResult``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from skr.models import (
    AssignmentRef,
    FailureCode,
    KeyRef,
    OnboardingResult,
    Outcome,
    ReleaseReport,
    RoleRef,
    SkipReason,
    Stage,
    VmFacts,
    VmResourceId,
)
from skr.workflow.progress import clip
from skr.workflow.timing import seconds_between

RESULT_DETAIL_MAX = 1024


class Finish(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Ends a run early with a skip or a classified failure."""

    def __init__(
        self,
        outcome: Outcome,
        detail: str,
        *,
        failure_code: FailureCode | None = None,
        skip_reason: SkipReason | None = None,
    ) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.failure_code = failure_code
        self.skip_reason = skip_reason

    @classmethod
    def failed(cls, code: FailureCode, detail: str) -> Finish:
        return cls(Outcome.FAILED, detail, failure_code=code)

    @classmethod
    def skipped(cls, reason: SkipReason, detail: str) -> Finish:
        return cls(Outcome.SKIPPED, detail, skip_reason=reason)


@dataclass
class ResultDraft:
    vm_id: VmResourceId
    started_at: datetime
    facts: VmFacts | None = None
    key: KeyRef | None = None
    role: RoleRef | None = None
    assignment: AssignmentRef | None = None
    assignment_created_at: datetime | None = None
    released_at: datetime | None = None
    release_attempts: int = 0
    report: ReleaseReport | None = None
    stage_times: dict[Stage, datetime] = field(default_factory=dict)

    def propagation_seconds(self) -> float | None:
        """Assignment created -> release observed; both ends are conservative, so never below the true delay."""
        if self.assignment_created_at is None or self.released_at is None:
            return None
        return round(max(0.0, seconds_between(self.assignment_created_at, self.released_at)), 3)

    def build(self, finish: Finish | None, finished_at: datetime) -> OnboardingResult:
        outcome = Outcome.RELEASED if finish is None else finish.outcome
        detail = "released" if finish is None else finish.detail
        return OnboardingResult(
            vm_id=self.vm_id,
            outcome=outcome,
            failure_code=None if finish is None else finish.failure_code,
            skip_reason=None if finish is None else finish.skip_reason,
            detail=clip(detail, RESULT_DETAIL_MAX),
            unique_vm_id=self.facts.unique_id if self.facts else None,
            principal_id=self.facts.principal_id if self.facts else None,
            key=self.key,
            role=self.role,
            assignment=self.assignment,
            stage_times=dict(self.stage_times),
            started_at=self.started_at,
            finished_at=finished_at,
            assignment_created_at=self.assignment_created_at,
            released_at=self.released_at,
            propagation_seconds=self.propagation_seconds(),
            release_attempts=self.release_attempts,
            report=self.report,
        )
