"""Backoff and deadline arithmetic on orchestration time (``context.current_utc_datetime``)."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field, model_validator

from skr.workflow._base import Frozen

_MAX_EXPONENT = 64  # factor ** 64 already exceeds any cap; keeps huge attempt numbers finite


class Backoff(Frozen):
    """Capped exponential backoff: initial, initial*factor, ... never above cap."""

    initial_seconds: float = Field(gt=0, le=3600)
    cap_seconds: float = Field(gt=0, le=3600)
    factor: float = Field(default=2.0, ge=1.0, le=10.0)

    @model_validator(mode="after")
    def _cap_not_below_initial(self) -> Backoff:
        if self.cap_seconds < self.initial_seconds:
            raise ValueError(f"backoff cap {self.cap_seconds}s is below its initial delay {self.initial_seconds}s")
        return self

    def delay(self, attempt: int) -> float:
        """Wait after the ``attempt``-th try (1-based)."""
        if attempt < 1:
            raise ValueError(f"backoff attempt must be >= 1, got {attempt}")
        exponent = min(attempt - 1, _MAX_EXPONENT)
        return min(self.cap_seconds, self.initial_seconds * self.factor**exponent)


def seconds_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def later(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def remaining(now: datetime, deadline: datetime) -> float:
    """Seconds left before ``deadline`` (never negative)."""
    return max(0.0, seconds_between(now, deadline))


def clip_to_deadline(now: datetime, deadline: datetime | None, seconds: float) -> float | None:
    """``seconds`` cut short at the deadline; None when the deadline has already passed."""
    if deadline is None:
        return max(0.0, seconds)
    left = remaining(now, deadline)
    if left <= 0:
        return None
    return min(max(0.0, seconds), left)


def retry_wait(
    *,
    attempt: int,
    backoff: Backoff,
    retry_after: float | None,
    max_attempts: int | None,
    now: datetime,
    deadline: datetime | None,
) -> float | None:
    """How long to wait before trying again after ``attempt`` failed tries, or None to give up.

    Retry-After is honoured as a lower bound; a Retry-After that reaches past the deadline means
    the next try could only happen after it, so we give up instead of waiting for nothing.
    """
    if max_attempts is not None and attempt >= max_attempts:
        return None
    wait = backoff.delay(attempt)
    if retry_after is not None and retry_after > wait:
        wait = retry_after
    if deadline is not None and wait >= remaining(now, deadline):
        return None
    return wait
