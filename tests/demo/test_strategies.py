"""The baseline and oracle the propagation benchmark compares against, on known delays."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.strategies import RunCommandTiming, fixed_sleep_release, oracle_release, ratio

TIMING = RunCommandTiming(duration_s=20.0, release_offset_s=5.0)


def test_fixed_sleep_releases_on_first_attempt_when_the_delay_is_shorter_than_the_sleep() -> None:
    release = fixed_sleep_release(30.0, 60.0, TIMING)
    assert (release.ttr_s, release.attempts, release.lag_s) == (65.0, 1, 35.0)


def test_fixed_sleep_pays_a_full_sleep_and_a_failed_run_command_per_retry() -> None:
    # attempt 1 calls release at 65 s (too early for a 100 s delay); attempt 2 starts after the
    # failed command (80 s) plus another 60 s sleep = 140 s and calls release at 145 s.
    release = fixed_sleep_release(100.0, 60.0, TIMING)
    assert (release.ttr_s, release.attempts) == (145.0, 2)
    assert release.lag_s == 45.0


def test_fixed_sleep_succeeds_exactly_at_the_effect_instant() -> None:
    assert fixed_sleep_release(65.0, 60.0, TIMING).attempts == 1


def test_oracle_is_the_delay_itself() -> None:
    release = oracle_release(42.5)
    assert (release.ttr_s, release.lag_s, release.attempts) == (42.5, 0.0, 1)


@given(
    delay=st.floats(min_value=0, max_value=3600, allow_nan=False),
    sleep=st.floats(min_value=1, max_value=600, allow_nan=False),
    duration=st.floats(min_value=0, max_value=120, allow_nan=False),
)
def test_no_strategy_beats_the_oracle_and_the_baseline_overshoots_by_less_than_one_cycle(
    delay: float, sleep: float, duration: float
) -> None:
    timing = RunCommandTiming(duration_s=duration, release_offset_s=duration / 2)
    baseline = fixed_sleep_release(delay, sleep, timing)
    assert baseline.ttr_s >= oracle_release(delay).ttr_s
    assert baseline.lag_s == pytest.approx(baseline.ttr_s - delay)
    # the attempt before the successful one was too early, so the lag is under one sleep+command cycle
    assert baseline.lag_s <= sleep + duration + timing.release_offset_s + 1e-6


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fixed_sleep_release(-1.0, 60.0, TIMING), "negative"),
        (lambda: fixed_sleep_release(1.0, 0.0, TIMING), "positive"),
        (lambda: oracle_release(-0.1), "negative"),
        (lambda: RunCommandTiming(duration_s=5.0, release_offset_s=6.0), "within the run command"),
        (lambda: RunCommandTiming(duration_s=-5.0, release_offset_s=0.0), "non-negative"),
    ],
)
def test_bad_inputs_are_refused_with_a_specific_message(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_ratio_rounds_and_guards_zero() -> None:
    assert ratio(1.0, 3.0) == 0.333
    assert ratio(5.0, 0.0) is None
