from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from skr.errors import ClassifiedError
from skr.models import FailureCode
from skr.workflow.options import OffboardingOptions, OnboardingOptions
from skr.workflow.retry import next_retry
from skr.workflow.timing import Backoff, clip_to_deadline, later, remaining, retry_wait, seconds_between
from tests.unit.workflow_factories import T0, guard


def test_backoff_doubles_then_caps() -> None:
    backoff = Backoff(initial_seconds=1, cap_seconds=10)
    assert [backoff.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_backoff_huge_attempt_stays_at_cap() -> None:
    assert Backoff(initial_seconds=1, cap_seconds=30, factor=3).delay(10_000) == 30


def test_backoff_rejects_cap_below_initial_and_attempt_zero() -> None:
    with pytest.raises(ValidationError, match="below its initial delay"):
        Backoff(initial_seconds=5, cap_seconds=1)
    with pytest.raises(ValueError, match=">= 1"):
        Backoff(initial_seconds=1, cap_seconds=2).delay(0)


@given(
    st.floats(min_value=0.01, max_value=100),
    st.floats(min_value=0, max_value=3000),
    st.floats(min_value=1, max_value=10),
    st.integers(min_value=1, max_value=200),
)
def test_backoff_is_monotonic_and_bounded(initial: float, extra: float, factor: float, attempt: int) -> None:
    backoff = Backoff(initial_seconds=initial, cap_seconds=min(3600, initial + extra), factor=factor)
    assert initial <= backoff.delay(attempt) <= backoff.cap_seconds
    assert backoff.delay(attempt) <= backoff.delay(attempt + 1)


def test_deadline_arithmetic() -> None:
    deadline = later(T0, 30)
    assert seconds_between(T0, deadline) == 30
    assert remaining(later(T0, 40), deadline) == 0
    assert clip_to_deadline(T0, deadline, 50) == 30
    assert clip_to_deadline(T0, deadline, 5) == 5
    assert clip_to_deadline(deadline, deadline, 5) is None
    assert clip_to_deadline(T0, None, 7) == 7


def test_retry_wait_honours_retry_after_as_lower_bound() -> None:
    backoff = Backoff(initial_seconds=2, cap_seconds=60)
    assert retry_wait(attempt=1, backoff=backoff, retry_after=17, max_attempts=5, now=T0, deadline=None) == 17
    assert retry_wait(attempt=1, backoff=backoff, retry_after=0.5, max_attempts=5, now=T0, deadline=None) == 2


def test_retry_wait_gives_up_on_attempts_or_deadline() -> None:
    backoff = Backoff(initial_seconds=2, cap_seconds=60)
    assert retry_wait(attempt=5, backoff=backoff, retry_after=None, max_attempts=5, now=T0, deadline=None) is None
    deadline = T0 + timedelta(seconds=10)
    # A Retry-After beyond the deadline means the next try could not happen in time.
    assert retry_wait(attempt=1, backoff=backoff, retry_after=30, max_attempts=None, now=T0, deadline=deadline) is None
    assert retry_wait(attempt=1, backoff=backoff, retry_after=None, max_attempts=None, now=T0, deadline=deadline) == 2


def _error(code: FailureCode, retryable: bool = True, after: float | None = None) -> ClassifiedError:
    return ClassifiedError(code=code, retryable=retryable, retry_after_seconds=after, message="x")


def test_next_retry_terminal_errors_are_final() -> None:
    options = OnboardingOptions(scope=guard())
    assert next_retry(_error(FailureCode.POLICY_DENIED, False), 1, options=options, now=T0, deadline=None) is None


def test_next_retry_principal_not_found_runs_until_the_deadline() -> None:
    options = OnboardingOptions(scope=guard(), max_transient_attempts=2)
    deadline = later(T0, 120)
    error = _error(FailureCode.PRINCIPAL_NOT_FOUND)
    # Far beyond max_transient_attempts, still retried while time remains, with its own backoff.
    assert next_retry(error, 10, options=options, now=T0, deadline=deadline) == options.principal_retry.cap_seconds
    assert next_retry(error, 10, options=options, now=later(T0, 110), deadline=deadline) is None
    # Without a deadline it falls back to the bounded transient policy.
    assert next_retry(error, 2, options=options, now=T0, deadline=None) is None


def test_next_retry_throttling_honours_retry_after_within_a_time_budget() -> None:
    options = OffboardingOptions(max_transient_attempts=3, throttle_budget_seconds=600)
    error = _error(FailureCode.THROTTLED, after=25)
    assert next_retry(error, 1, options=options, now=T0, deadline=None) == 25
    # Far beyond max_transient_attempts: a burst's 429s are waited out (capped backoff, Retry-After as
    # its floor), not counted.
    cap = options.transient_retry.cap_seconds
    assert next_retry(error, 30, options=options, now=later(T0, 500), deadline=None, throttled_since=T0) == cap
    # ... until the budget, counted from the first 429, would be overrun.
    assert next_retry(error, 31, options=options, now=later(T0, 550), deadline=None, throttled_since=T0) is None
    # A step deadline that comes sooner still wins.
    assert next_retry(error, 2, options=options, now=T0, deadline=later(T0, 20), throttled_since=T0) is None


def test_next_retry_other_transient_errors_stay_bounded_by_count() -> None:
    options = OffboardingOptions(max_transient_attempts=3)
    error = _error(FailureCode.TRANSIENT)
    assert next_retry(error, 2, options=options, now=T0, deadline=None) == options.transient_retry.delay(2)
    assert next_retry(error, 3, options=options, now=T0, deadline=None) is None


def test_options_keep_the_gap_between_runs_within_one_in_vm_poll() -> None:
    options = OnboardingOptions(scope=guard())
    assert options.release_retry.cap_seconds + options.command_poll.cap_seconds <= options.in_vm_poll_interval_seconds
    with pytest.raises(ValidationError, match="exceeds the in-VM poll interval"):
        OnboardingOptions(scope=guard(), release_retry=Backoff(initial_seconds=1, cap_seconds=30))


def test_options_round_trip_through_json() -> None:
    options = OnboardingOptions(scope=guard(f"/subscriptions/{'0' * 8}-0000-0000-0000-{'0' * 12}/resourceGroups/rg"))
    assert OnboardingOptions.from_json(options.to_json()) == options


def test_options_watch_a_running_window_no_looser_than_one_in_vm_poll() -> None:
    with pytest.raises(ValidationError, match="command watch cap"):
        OnboardingOptions(scope=guard(), command_watch=Backoff(initial_seconds=2, cap_seconds=30))
