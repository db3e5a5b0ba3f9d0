"""Which classified errors to retry, and after how long (durable timers, Retry-After honoured)."""

from __future__ import annotations

from datetime import datetime

from skr.errors import ClassifiedError
from skr.models import FailureCode
from skr.workflow.options import OffboardingOptions, OnboardingOptions
from skr.workflow.timing import Backoff, retry_wait

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
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when the error is final."""
    if not error.retryable:
        return None
    backoff: Backoff = options.transient_retry
    max_attempts: int | None = options.max_transient_attempts
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
