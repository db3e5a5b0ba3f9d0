"""Parse the in-VM script's ``SKR-RESULT {json}`` line (vm_scripts/README.md) out of run-command output.

Run-command output is the last 4,096 bytes of the script's stdout (plus stderr and the agent's
framing), so the line may be preceded by noise, cut at the front, or - from a misbehaving tool -
repeated or oversized. The parser takes the last line that validates, and when none does it
raises an error that describes the problem without ever quoting the output (which could hold
anything a broken tool printed). Every string it returns is bounded and scrubbed.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from skr.errors import scrub
from skr.models import ReleaseOutcome, ReleaseReport

RESULT_PREFIX = "SKR-RESULT"
OUTPUT_LIMIT_BYTES = 4096  # what ARM keeps of a run command's output
MAX_LINE_BYTES = 1024  # the script's own limit (vm_scripts/README.md)
DETAIL_MAX_LENGTH = 512

_KEY_ID = re.compile(r"^https://[A-Za-z0-9.\-\[\]:]+(?::\d+)?/keys/[A-Za-z0-9-]{1,127}(?:/[A-Za-z0-9]{0,64})?$")
_THUMBPRINT = re.compile(r"^[A-Za-z0-9_\-=+/:]{8,128}$")
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")
_OUTCOME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_KNOWN_OUTCOMES = {outcome.value for outcome in ReleaseOutcome}
TERMINAL_EXIT_CODE = 3


class ReportProblem(StrEnum):
    MISSING = "missing"  # no SKR-RESULT line at all
    MALFORMED = "malformed"  # a line, but not valid JSON of the schema
    OVERSIZE = "oversize"  # a line longer than the script may print


class ReleaseReportError(ValueError):
    """No usable result line; the message says why and never quotes the output."""

    def __init__(self, problem: ReportProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


class _WireResult(BaseModel):
    """The README schema, validated field by field (unknown fields are ignored: newer scripts add some)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    outcome: str
    key_id: str | None = Field(default=None, max_length=400)
    key_thumbprint: str | None = None
    http_status: int | None = Field(default=None, ge=100, le=599)
    error_code: str | None = None
    message: str | None = None
    attempts: int = Field(default=0, ge=0, le=100_000)
    elapsed_seconds: float = Field(default=0.0, ge=0.0, le=86_400.0 * 7)
    exit_code: int | None = Field(default=None, ge=0, le=255)

    @field_validator("outcome")
    @classmethod
    def _outcome(cls, value: str) -> str:
        if not _OUTCOME.match(value):
            raise ValueError("outcome is not a lower-case identifier")
        return value

    @field_validator("key_id")
    @classmethod
    def _kid(cls, value: str | None) -> str | None:
        if value is not None and not _KEY_ID.match(value):
            raise ValueError("key_id is not a Key Vault key URL")
        return value

    @field_validator("key_thumbprint")
    @classmethod
    def _thumbprint(cls, value: str | None) -> str | None:
        if value is not None and not _THUMBPRINT.match(value):
            raise ValueError("key_thumbprint is not a short fingerprint")
        return value

    @field_validator("error_code")
    @classmethod
    def _error_code(cls, value: str | None) -> str | None:
        if value is not None and not _ERROR_CODE.match(value):
            raise ValueError("error_code is not a short identifier")
        return value

    def to_report(self) -> ReleaseReport:
        """A newer script's unknown outcome is terminal (README §3): internal_error, exit code 3, code kept."""
        detail = scrub(self.message, DETAIL_MAX_LENGTH) if self.message else None
        exit_code = self.exit_code
        if self.outcome in _KNOWN_OUTCOMES:
            outcome = ReleaseOutcome(self.outcome)
        else:
            outcome, exit_code = ReleaseOutcome.INTERNAL_ERROR, TERMINAL_EXIT_CODE
            detail = scrub(
                f"unrecognised outcome {self.outcome!r}" + (f": {detail}" if detail else ""), DETAIL_MAX_LENGTH
            )
        return ReleaseReport(
            outcome=outcome,
            key_id=self.key_id,
            key_thumbprint=self.key_thumbprint,
            http_status=self.http_status,
            error_code=self.error_code,
            attempts=self.attempts,
            elapsed_seconds=self.elapsed_seconds,
            detail=detail or None,
            exit_code=exit_code,
        )


def parse_release_output(output: str | bytes | None) -> ReleaseReport:
    """The last valid SKR-RESULT line of ``output``; raises ReleaseReportError when there is none."""
    lines = _candidate_lines(_tail(output))
    if not lines:
        raise ReleaseReportError(ReportProblem.MISSING, "the run-command output has no SKR-RESULT line")
    problems: list[tuple[ReportProblem, str]] = []
    for line in reversed(lines):
        try:
            return _parse_line(line)
        except ReleaseReportError as exc:
            problems.append((exc.problem, str(exc)))
    problem, why = problems[0]  # the last line's reason is the relevant one
    count = f"{len(lines)} SKR-RESULT lines" if len(lines) > 1 else "the SKR-RESULT line"
    raise ReleaseReportError(problem, f"no valid SKR-RESULT line in the run-command output ({count}; last: {why})")


def _tail(output: str | bytes | None) -> str:
    """The last OUTPUT_LIMIT_BYTES, dropping a line cut at the front."""
    if output is None:
        return ""
    raw = output if isinstance(output, bytes) else output.encode("utf-8", errors="replace")
    if len(raw) <= OUTPUT_LIMIT_BYTES:
        return raw.decode("utf-8", errors="replace")
    cut = raw[-OUTPUT_LIMIT_BYTES:]
    newline = cut.find(b"\n")
    return cut[newline + 1 :].decode("utf-8", errors="replace") if newline >= 0 else ""


def _candidate_lines(text: str) -> list[str]:
    """Lines that start with the prefix (whitespace aside), in output order."""
    found = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line.startswith(RESULT_PREFIX) and (len(line) == len(RESULT_PREFIX) or line[len(RESULT_PREFIX)].isspace()):
            found.append(line)
    return found


def _parse_line(line: str) -> ReleaseReport:
    size = len(line.encode("utf-8"))
    if size > MAX_LINE_BYTES:
        raise ReleaseReportError(
            ReportProblem.OVERSIZE, f"SKR-RESULT line is {size} bytes, over the {MAX_LINE_BYTES}-byte limit"
        )
    payload = line[len(RESULT_PREFIX) :].strip()
    if not payload:
        raise ReleaseReportError(ReportProblem.MALFORMED, "SKR-RESULT line has no JSON payload")
    try:
        data: Any = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ReleaseReportError(
            ReportProblem.MALFORMED, f"SKR-RESULT payload is not JSON ({exc.msg} at column {exc.colno})"
        ) from None
    if not isinstance(data, dict):
        raise ReleaseReportError(
            ReportProblem.MALFORMED, f"SKR-RESULT payload is a JSON {type(data).__name__}, not an object"
        )
    try:
        return _WireResult.model_validate(data).to_report()
    except ValidationError as exc:
        raise ReleaseReportError(ReportProblem.MALFORMED, f"SKR-RESULT payload is invalid: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """Field paths and reasons only: pydantic's default text would quote the input values."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False)[:4]:
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        reason = error["msg"] if error["type"] in ("value_error", "missing") else error["type"]
        parts.append(f"{where}: {reason}")
    return "; ".join(parts)
