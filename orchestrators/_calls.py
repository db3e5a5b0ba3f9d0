"""Calling activities from a generator orchestrator: envelope parsing and durable-timer retries.

Deterministic by construction: every decision is made from values in history (activity results)
and from ``context.current_utc_datetime``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import azure.durable_functions as df

from skr.activity_result import ActivityResult, parse
from skr.errors import ClassifiedError, scrub
from skr.models import FailureCode
from skr.workflow.options import OffboardingOptions, OnboardingOptions
from skr.workflow.retry import next_retry
from skr.workflow.timing import later

T = TypeVar("T")
Step = Generator[Any, Any, T]
OnWait = Callable[[int, ClassifiedError, float], None]


@dataclass(frozen=True)
class Called(Generic[T]):
    result: ActivityResult[T]
    attempts: int
    last_started: datetime  # orchestration time the successful (or last) attempt was scheduled

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def value(self) -> T:
        return self.result.unwrap()

    @property
    def error(self) -> ClassifiedError:
        if self.result.error is None:
            raise RuntimeError("Called.error on a successful call")
        return self.result.error


def crashed(name: str, failure: BaseException) -> ClassifiedError:
    """An activity that raised: its own classification when it carried one, else internal_error."""
    found = ClassifiedError.from_failure(failure)
    if found is not None:
        return found
    return ClassifiedError(
        code=FailureCode.INTERNAL_ERROR, retryable=False, message=scrub(f"activity {name} failed: {failure}")
    )


def call(
    context: df.DurableOrchestrationContext,
    name: str,
    payload: Any,
    value_model: Any,
    *,
    options: OnboardingOptions | OffboardingOptions,
    deadline: datetime | None = None,
    on_wait: OnWait | None = None,
    log: logging.Logger | None = None,
) -> Step[Called[Any]]:
    """Run activity ``name`` until it succeeds, fails terminally, or its retries run out."""
    attempt = 0
    throttled_since: datetime | None = None
    while True:
        attempt += 1
        started = context.current_utc_datetime
        try:
            raw = yield context.call_activity(name, payload)
            result: ActivityResult[Any] = parse(raw, value_model)
        except Exception as exc:  # a raising activity ends in TaskFailed; both are replayed identically
            result = ActivityResult[Any](ok=False, error=crashed(name, exc))
        if result.ok or result.error is None:
            return Called(result=result, attempts=attempt, last_started=started)
        now = context.current_utc_datetime
        if result.error.code is FailureCode.THROTTLED and throttled_since is None:
            throttled_since = now
        wait = next_retry(
            result.error, attempt, options=options, now=now, deadline=deadline, throttled_since=throttled_since
        )
        if wait is None:
            return Called(result=result, attempts=attempt, last_started=started)
        if log is not None and not context.is_replaying:
            log.info("%s: %s; retry %d in %.1fs", name, result.error.describe(), attempt + 1, wait)
        if on_wait is not None:
            on_wait(attempt, result.error, wait)
        yield context.create_timer(later(now, wait))
