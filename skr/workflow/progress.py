"""Stage bookkeeping of one run: custom status (small, secret-free) and the result's stage times."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from skr.models import CustomStatus, Stage
from skr.workflow.timing import seconds_between

DETAIL_MAX_LENGTH = 512


def clip(text: str | None, limit: int = DETAIL_MAX_LENGTH) -> str | None:
    """Bound free text for status and results (the models reject longer strings)."""
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Progress:
    """Where a run is: the current stage, when it began, and when each stage was first entered."""

    def __init__(self, started_at: datetime) -> None:
        self.started_at = started_at
        self.stage: Stage | None = None
        self.since = started_at
        self.stage_times: dict[Stage, datetime] = {}

    def enter(self, stage: Stage, now: datetime) -> None:
        if stage is self.stage:
            return
        self.stage = stage
        self.since = now
        self.stage_times.setdefault(stage, now)

    def status(
        self,
        now: datetime,
        *,
        attempt: int = 0,
        detail: str | None = None,
        assigned_at: datetime | None = None,
    ) -> dict[str, Any]:
        """The custom-status JSON for the current stage."""
        if self.stage is None:
            raise RuntimeError("Progress.status before any stage was entered")
        since_assignment = None if assigned_at is None else round(max(0.0, seconds_between(assigned_at, now)), 3)
        return CustomStatus(
            stage=self.stage,
            attempt=attempt,
            since=self.since,
            detail=clip(detail),
            seconds_since_assignment=since_assignment,
        ).to_json()
