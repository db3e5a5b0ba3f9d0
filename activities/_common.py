"""What every activity does around its one service call: validate input, classify expected failures.

Activities run at least once, so each service call is idempotent; an expected Azure failure comes
back as an envelope error (orchestrators branch on data and wait on durable timers), while bad
input from the orchestrator - a programming error - raises with a message naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from azure.core.exceptions import AzureError
from pydantic import BaseModel, ConfigDict, ValidationError

from skr import clients
from skr.activity_result import fail, ok
from skr.errors import Operation, SkrError, classify
from skr.settings import Settings

logger = logging.getLogger("skr.activities")

M = TypeVar("M", bound=BaseModel)


class ActivityInputError(ValueError):
    """The orchestrator passed an input that does not match the activity contract."""


class Empty(BaseModel):
    """Input of activities that take none (``{}`` or null)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def parse_input(activity: str, model: type[M], payload: Any) -> M:
    try:
        return model.model_validate({} if payload is None else payload)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise ActivityInputError(f"{activity}: invalid input ({fields})") from None


def settings() -> Settings:
    return clients.get_settings()


def factory() -> clients.ClientFactory:
    return clients.get_factory()


def run(activity: str, operation: Operation, call: Callable[[], Any], *, subject: object = None) -> dict[str, Any]:
    """The envelope around one service call; logs the activity, its subject and outcome (never payloads)."""
    try:
        value = call()
    except (SkrError, AzureError) as exc:
        error = classify(exc, operation)
        level = logging.INFO if error.retryable else logging.WARNING
        logger.log(level, "%s %s -> %s", activity, subject or "", error.describe())
        return fail(error)
    logger.info("%s %s -> ok", activity, subject or "")
    return ok(value)
