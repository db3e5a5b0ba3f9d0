"""Which classified errors to retry, and after how long (durable timers, Retry-After honoured)."""

from __future__ import annotations

from datetime import datetime

from skr.errors import ClassifiedError
from skr.models import FailureCode
from skr.workflow.options import OffboardingOptions, OnboardingOptions
from skr.workflow.timing import Backoff, later, retry_wait

# Codes retried until the step's deadline rather than a fixed number of times: they clear on
# their own (Entra replication, the VM's one-command-at-a-time lock).
UNTIL_DEADLINE = frozenset({FailureCode.PRINCIPAL_NOT_FOUND, FailureCode.RUN_COMMAND_CONFLICT})


def next_retry(
    error: ClassifiedError,
    attempt: int,
    *,
    options: OnboardingOptions | OffboardingOptions,
    now: datetime,
    deadline: datetime | None,
    throttled_since: datetime | None = None,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when the error is final.

    ``throttled_since`` is when this call was first answered 429.
    """
    if not error.retryable:
        return None
    backoff: Backoff = options.transient_retry
    max_attempts: int | None = options.max_transient_attempts
    if error.code is FailureCode.THROTTLED:
        # ARM throttling clears as its token buckets refill: under a burst a fixed count of tries
        # fails VMs that a little more patience would onboard, so 429s get a time budget instead.
        budget_end = later(throttled_since or now, options.throttle_budget_seconds)
        deadline = budget_end if deadline is None else min(deadline, budget_end)
        # Capped exponential backoff with Retry-After as its floor (below): retrying every second
        # for half an hour would grow the history by thousands of events and make replays crawl.
        max_attempts = None
    if isinstance(options, OnboardingOptions) and error.code in UNTIL_DEADLINE and deadline is not None:
        backoff = options.principal_retry if error.code is FailureCode.PRINCIPAL_NOT_FOUND else options.conflict_retry
        max_attempts = None
    return retry_wait(
        attempt=attempt,
        backoff=backoff,
        retry_after=error.retry_after_seconds,
        max_attempts=max_attempts,
        now=now,
        deadline=deadline,
    )
