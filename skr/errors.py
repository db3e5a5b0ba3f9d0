"""Classified Azure failures (DESIGN §7): every error becomes a FailureCode plus retryable-or-terminal.

Orchestrators decide retries from data, not from exception types: an activity either returns a
``ClassifiedError`` or raises ``SkrError`` whose message embeds one, and the orchestrator reads it
back with ``ClassifiedError.from_failure`` from the text Durable hands it. Messages are scrubbed of
anything token-like before they can reach history, custom status or logs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Self

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceResponseError,
)
from pydantic import BaseModel, ConfigDict, Field

from skr.models import FailureCode

MESSAGE_MAX_LENGTH = 512
FAILURE_MARKER = "SKR-ERROR "
MAX_RETRY_AFTER_SECONDS = 3600.0


class Operation(StrEnum):
    """What was being attempted: the same status means different things per call (404 VM vs 404 key)."""

    VM_READ = "vm_read"
    KEY_READ = "key_read"
    KEY_WRITE = "key_write"
    KEY_RELEASE = "key_release"
    ROLE_DEFINITION = "role_definition"
    ROLE_ASSIGNMENT_WRITE = "role_assignment_write"
    ROLE_ASSIGNMENT_READ = "role_assignment_read"
    ROLE_ASSIGNMENT_DELETE = "role_assignment_delete"
    RUN_COMMAND = "run_command"
    EVENT_PUBLISH = "event_publish"
    OTHER = "other"


class ClassifiedError(BaseModel):
    """Small, JSON-serialisable and secret-free: safe for Durable history and custom status."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    code: FailureCode
    retryable: bool
    retry_after_seconds: float | None = None
    status: int | None = None
    azure_code: str | None = None
    inner_code: str | None = None
    operation: Operation = Operation.OTHER
    message: str = Field(default="", max_length=MESSAGE_MAX_LENGTH)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return cls.model_validate(data)

    @classmethod
    def from_failure(cls, failure: BaseException | str) -> Self | None:
        """Recover the classification from an activity failure text (Durable wraps reason and details)."""
        text = str(failure)
        at = text.find(FAILURE_MARKER)
        if at < 0:
            return None
        try:
            data, _ = json.JSONDecoder().raw_decode(text, at + len(FAILURE_MARKER))
            return cls.model_validate(data)
        except ValueError:
            return None

    def describe(self) -> str:
        where = f" ({self.status} {self.azure_code or ''}{'/' + self.inner_code if self.inner_code else ''})".rstrip()
        retry = f", retry after {self.retry_after_seconds:g}s" if self.retry_after_seconds else ""
        kind = "retryable" if self.retryable else "terminal"
        return f"{self.code.value}{where if self.status else ''} [{kind}{retry}]: {self.message}"


class SkrError(Exception):
    """What activities raise: the message carries the classification as JSON after FAILURE_MARKER."""

    def __init__(self, error: ClassifiedError) -> None:
        self.error = error
        super().__init__(f"{FAILURE_MARKER}{json.dumps(error.to_json(), separators=(',', ':'))}")

    @classmethod
    def of(
        cls, code: FailureCode, message: str, *, retryable: bool = False, operation: Operation = Operation.OTHER
    ) -> SkrError:
        """A failure our own code detects (no Azure exception behind it)."""
        return cls(ClassifiedError(code=code, retryable=retryable, operation=operation, message=scrub(message)))


# ---------------------------------------------------------------------------------------------
# Scrubbing
# ---------------------------------------------------------------------------------------------

_SECRET_PATTERNS = (
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)*"), "<redacted-jwt>"),
    (re.compile(r"(?i)\b(bearer|pop)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 <redacted>"),
    (
        re.compile(
            r"(?i)([\"']?(?:access_token|refresh_token|client_secret|sig|key|password|token)[\"']?\s*[:=]\s*[\"']?)[^\s\"'&,;]+"
        ),
        r"\1<redacted>",
    ),
)


def scrub(message: str, limit: int = MESSAGE_MAX_LENGTH) -> str:
    """Strip tokens, keys and signatures; flatten whitespace; cap the length."""
    text = message
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------

_THROTTLE_CODES = {"toomanyrequests", "resourcerequeststhrottled", "subscriptionrequeststhrottled", "throttled"}
_QUOTA_CODES = {"roleassignmentlimitexceeded", "roledefinitionlimitexceeded", "quotaexceeded"}
_CONFLICT_CODES = {"roleassignmentexists", "roledefinitionwithsamenameexists", "roleassignmentupdatenotpermitted"}
_BUSY_CODES = {"anotheroperationinprogress", "operationpreempted", "retryableerror", "conflictingoperation"}
_DENIED_CODES = {"authorizationfailed", "linkedauthorizationfailed", "invalidauthenticationtoken", "unauthorized"}
_NOT_EXPORTABLE = ("akv.skr.1001", "akv.skr.1003", "akv.skr.1004", "akv.skr.1005", "akv.skr.1006", "akv.skr.1016")
_NOT_FOUND_BY_OPERATION = {
    Operation.VM_READ: FailureCode.VM_NOT_FOUND,
    Operation.RUN_COMMAND: FailureCode.VM_DELETED,
    Operation.KEY_READ: FailureCode.KEY_NOT_FOUND,
    Operation.KEY_WRITE: FailureCode.KEY_NOT_FOUND,
    Operation.KEY_RELEASE: FailureCode.KEY_NOT_FOUND,
    Operation.ROLE_DEFINITION: FailureCode.ROLE_NOT_FOUND,
    Operation.ROLE_ASSIGNMENT_READ: FailureCode.ASSIGNMENT_NOT_FOUND,
    Operation.ROLE_ASSIGNMENT_DELETE: FailureCode.ASSIGNMENT_NOT_FOUND,
}


def decide(
    status: int | None, azure_code: str | None, inner_code: str | None, message: str, operation: Operation
) -> tuple[FailureCode, bool]:
    """The table (reference/azure_rest.md §1.4, §3.5, §6; anchors.md §2.1) as one pure function."""
    code = (azure_code or "").lower()
    inner = (inner_code or "").lower()
    text = message.lower()
    if status == 429 or code in _THROTTLE_CODES:
        return FailureCode.THROTTLED, True
    if code in _QUOTA_CODES:
        return FailureCode.QUOTA_EXCEEDED, False
    if code == "principalnotfound":
        return FailureCode.PRINCIPAL_NOT_FOUND, True
    if code in _CONFLICT_CODES:
        return FailureCode.CONFLICT, False
    if code == "roledefinitiondoesnotexist":
        return FailureCode.ROLE_NOT_FOUND, False
    if code == "roleassignmentnotfound":
        return FailureCode.ASSIGNMENT_NOT_FOUND, operation is Operation.ROLE_ASSIGNMENT_READ
    if code == "keynotfound":
        return FailureCode.KEY_NOT_FOUND, False
    if {code, inner} & {"objectisdeletedbutrecoverable", "objectisbeingdeleted"}:
        return FailureCode.KEY_DELETED, False
    if "akv.skr.1020" in text:
        return FailureCode.KEY_POLICY_MISMATCH, False
    if any(marker in text for marker in _NOT_EXPORTABLE) or "hardware key operation not allowed" in text:
        return FailureCode.NOT_EXPORTABLE, False
    if inner == "forbiddenbyrbac":
        # The VM identity waiting for propagation vs. our own identity lacking a role.
        if operation is Operation.KEY_RELEASE:
            return FailureCode.FORBIDDEN_BY_RBAC, True
        return FailureCode.NOT_AUTHORIZED, False
    if status == 403 and operation is Operation.KEY_RELEASE:
        if "attestation statement cannot be verified" in text:
            return FailureCode.ATTESTATION_FAILED, False
        if "release policy" in text:
            return FailureCode.POLICY_DENIED, False
    if code in _DENIED_CODES or status in (401, 403):
        return FailureCode.NOT_AUTHORIZED, False
    if operation is Operation.RUN_COMMAND and (status == 409 or code in _BUSY_CODES):
        return FailureCode.RUN_COMMAND_CONFLICT, True
    if code in _BUSY_CODES:
        return FailureCode.TRANSIENT, True
    if status == 404:
        found = _NOT_FOUND_BY_OPERATION.get(operation)
        if found is None:
            return FailureCode.HTTP_ERROR, False
        return found, operation is Operation.ROLE_ASSIGNMENT_READ  # ARM may lag a fresh PUT
    if status == 409:
        return FailureCode.CONFLICT, False
    if status is not None and (status == 408 or status >= 500):
        return FailureCode.TRANSIENT, True
    if status == 400:
        return FailureCode.INVALID_REQUEST, False
    return FailureCode.HTTP_ERROR, False


def classify_response(
    status: int | None,
    azure_code: str | None = None,
    inner_code: str | None = None,
    message: str = "",
    *,
    headers: Mapping[str, str] | None = None,
    operation: Operation = Operation.OTHER,
    now: datetime | None = None,
) -> ClassifiedError:
    """Classify an HTTP failure from its parts (also usable for raw REST calls and in-VM reports)."""
    code, retryable = decide(status, azure_code, inner_code, message, operation)
    return ClassifiedError(
        code=code,
        retryable=retryable,
        retry_after_seconds=retry_after_seconds(headers or {}, now=now) if retryable else None,
        status=status,
        azure_code=azure_code,
        inner_code=inner_code,
        operation=operation,
        message=scrub(message),
    )


def classify(
    exc: BaseException, operation: Operation = Operation.OTHER, *, now: datetime | None = None
) -> ClassifiedError:
    """Classify any exception an Azure SDK call (or our own code) raised."""
    if isinstance(exc, SkrError):
        return exc.error
    if isinstance(exc, HttpResponseError) and exc.response is not None:
        status = exc.status_code
        azure_code, inner_code, message = _error_parts(exc)
        headers = _headers(exc)
        return classify_response(status, azure_code, inner_code, message, headers=headers, operation=operation, now=now)
    if isinstance(exc, ServiceRequestError | ServiceResponseError | IncompleteReadError):
        return _plain(FailureCode.TRANSIENT, True, exc, operation)
    if isinstance(exc, ClientAuthenticationError):
        # No HTTP response: our credential could not get a token (identity missing or misconfigured).
        return _plain(FailureCode.NOT_AUTHORIZED, False, exc, operation)
    if isinstance(exc, AzureError):
        return _plain(FailureCode.HTTP_ERROR, False, exc, operation)
    if isinstance(exc, TimeoutError | ConnectionError):
        return _plain(FailureCode.TRANSIENT, True, exc, operation)
    return _plain(FailureCode.INTERNAL_ERROR, False, exc, operation)


def _plain(code: FailureCode, retryable: bool, exc: BaseException, operation: Operation) -> ClassifiedError:
    text = str(exc) or type(exc).__name__
    return ClassifiedError(
        code=code, retryable=retryable, operation=operation, message=scrub(f"{type(exc).__name__}: {text}")
    )


def _error_parts(exc: HttpResponseError) -> tuple[str | None, str | None, str]:
    error = exc.error
    if error is not None and (error.code or error.message):
        inner = error.innererror.get("code") if isinstance(error.innererror, Mapping) else None
        return error.code, inner if isinstance(inner, str) else None, error.message or str(exc)
    body = _json_body(exc)
    error_node = body.get("error")
    node: Mapping[str, Any] = error_node if isinstance(error_node, Mapping) else body
    code = node.get("code") if isinstance(node.get("code"), str) else None
    inner_node = node.get("innererror") or node.get("innerError")
    inner = inner_node.get("code") if isinstance(inner_node, Mapping) else None
    message = node.get("message") if isinstance(node.get("message"), str) else None
    return code, inner if isinstance(inner, str) else None, message or exc.reason or str(exc)


def _json_body(exc: HttpResponseError) -> Mapping[str, Any]:
    try:
        data = json.loads(exc.response.text()) if exc.response is not None else None
    except Exception:  # the body may be unread, streamed or not JSON: the status still classifies
        return {}
    return data if isinstance(data, Mapping) else {}


def _headers(exc: HttpResponseError) -> Mapping[str, str]:
    response = exc.response
    headers = getattr(response, "headers", None)
    return headers if isinstance(headers, Mapping) else {}


def retry_after_seconds(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``/``x-ms-retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    lowered = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = _number(lowered.get(name))
        if value is not None:
            return _cap(value / 1000.0)
    raw = lowered.get("retry-after")
    if not raw:
        return None
    value = _number(raw)
    if value is not None:
        return _cap(value)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _cap((when - (now or datetime.now(UTC))).total_seconds())


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _cap(seconds: float) -> float:
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
