"""Per-host log capture: every record made while the host runs one of its invocations is kept.

Several hosts can share a process (and the event loop), so records are attributed through a
context variable set around each invocation, episode and request; thread-pool work copies it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

HOST_LOGGER = "localdev.host"


@dataclass(frozen=True)
class Scope:
    host_id: str
    function: str | None = None
    invocation_id: str | None = None
    instance_id: str | None = None


@dataclass(frozen=True)
class LogEntry:
    """One captured log record, with the invocation it came from."""

    level: str
    logger: str
    message: str
    function: str | None
    invocation_id: str | None
    instance_id: str | None
    exc_text: str | None = None

    def __str__(self) -> str:
        where = f" [{self.function}]" if self.function else ""
        text = f"{self.level}{where} {self.logger}: {self.message}"
        return f"{text}\n{self.exc_text}" if self.exc_text else text


_SCOPE: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("localdev_host_scope", default=None)


def current_scope() -> Scope | None:
    return _SCOPE.get()


@contextmanager
def scoped(scope: Scope, **changes: str | None) -> Iterator[Scope]:
    active = replace(scope, **changes) if changes else scope  # type: ignore[arg-type]
    token = _SCOPE.set(active)
    try:
        yield active
    finally:
        _SCOPE.reset(token)


class LogCapture(logging.Handler):
    """Collects records of one host (attach to the root logger while the host runs)."""

    def __init__(self, host_id: str, limit: int = 50_000) -> None:
        super().__init__(logging.DEBUG)
        self.host_id = host_id
        self._limit = limit
        self._lock_entries = threading.Lock()
        self._entries: list[LogEntry] = []
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        scope = _SCOPE.get()
        if scope is None or scope.host_id != self.host_id:
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format in user code must not break logging
            message = str(record.msg)
        exc_text = self._formatter.formatException(record.exc_info) if record.exc_info else None
        entry = LogEntry(
            record.levelname, record.name, message, scope.function, scope.invocation_id, scope.instance_id, exc_text
        )
        with self._lock_entries:
            self._entries.append(entry)
            if len(self._entries) > self._limit:
                del self._entries[: len(self._entries) - self._limit]

    def entries(self) -> list[LogEntry]:
        with self._lock_entries:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock_entries:
            self._entries.clear()
