"""Counts every call the twin serves, by caller, service and operation (the cost of a run)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str]] = Counter()

    def record(self, caller: str, service: str, operation: str) -> None:
        with self._lock:
            self._counts[(caller, service, operation)] += 1

    def get(self, caller: str | None = None, service: str | None = None, operation: str | None = None) -> int:
        """Sum of the calls matching every given field (operation compares case-insensitively)."""
        with self._lock:
            return sum(
                count for (c, s, o), count in self._counts.items()
                if (caller is None or c == caller) and (service is None or s == service)
                and (operation is None or o.lower() == operation.lower())
            )

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"caller": c, "service": s, "operation": o, "count": n}
                for (c, s, o), n in sorted(self._counts.items())
            ]

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
