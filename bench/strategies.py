"""What the alternatives to our propagation wait would do on the same drawn RBAC delays.

Every time here is seconds after the role assignment was created; the "release instant" is when
the in-VM release call succeeds. A strategy can never release before the assignment takes effect
(``delay_s``), so the oracle that releases exactly then is the floor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunCommandTiming:
    """How long one release run command takes, and when inside it the release call happens."""

    duration_s: float  # run-command start -> result readable
    release_offset_s: float  # run-command start -> the script's first release call

    def __post_init__(self) -> None:
        if self.duration_s < 0 or self.release_offset_s < 0:
            raise ValueError("run-command timings must be non-negative")
        if self.release_offset_s > self.duration_s:
            raise ValueError("the release call must happen within the run command")


@dataclass(frozen=True)
class StrategyRelease:
    ttr_s: float  # assignment created -> successful release call
    attempts: int  # run commands used
    lag_s: float  # release instant - effect instant (>= 0)


def fixed_sleep_release(delay_s: float, sleep_s: float, timing: RunCommandTiming) -> StrategyRelease:
    """Terraform ``time_sleep`` style: sleep S, run the release once; on 403 sleep S again, repeat.

    Attempt k (1-based) starts at k*S + (k-1)*D (each failed run command costs its full duration D
    before the next sleep) and makes its release call ``release_offset_s`` later.
    """
    if sleep_s <= 0:
        raise ValueError(f"the baseline sleep must be positive, got {sleep_s}")
    if delay_s < 0:
        raise ValueError(f"an RBAC delay cannot be negative, got {delay_s}")
    attempt = 1
    while True:
        start = attempt * sleep_s + (attempt - 1) * timing.duration_s
        release_at = start + timing.release_offset_s
        if release_at >= delay_s:
            return StrategyRelease(ttr_s=release_at, attempts=attempt, lag_s=release_at - delay_s)
        attempt += 1


def oracle_release(delay_s: float) -> StrategyRelease:
    """Releases at the exact instant the assignment takes effect: nothing can do better."""
    if delay_s < 0:
        raise ValueError(f"an RBAC delay cannot be negative, got {delay_s}")
    return StrategyRelease(ttr_s=delay_s, attempts=1, lag_s=0.0)


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator`` rounded, or None when the denominator is zero."""
    return None if denominator == 0 else round(numerator / denominator, 3)
