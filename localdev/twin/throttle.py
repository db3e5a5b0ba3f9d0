"""ARM's per-principal token buckets (reads 250/25 s⁻¹, writes and deletes 200/10 s⁻¹), on the twin clock."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from localdev.twin.core import Twin


@dataclass
class Outcome:
    allowed: bool
    remaining: int | None  # None when throttling is off
    retry_after: int = 0  # whole seconds (>= 1) when refused


@dataclass
class _Bucket:
    tokens: float
    updated: float


class Throttle:
    def __init__(self, twin: Twin) -> None:
        self._twin = twin
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self.enabled = twin.config.throttling
        self.limits = {
            "reads": twin.config.throttle_reads,
            "writes": twin.config.throttle_writes,
            "deletes": twin.config.throttle_deletes,
        }

    def configure(self, *, enabled: bool | None = None, **limits: tuple[float, float]) -> None:
        """Switch throttling or change a bucket's (burst, refill per second); resets the buckets."""
        with self._lock:
            if enabled is not None:
                self.enabled = enabled
            for kind, limit in limits.items():
                if kind not in self.limits:
                    raise ValueError(f"unknown throttle bucket {kind!r}: expected reads, writes or deletes")
                burst, rate = float(limit[0]), float(limit[1])
                if burst < 1 or rate <= 0:
                    raise ValueError(f"{kind}: burst must be >= 1 and refill rate > 0")
                self.limits[kind] = (burst, rate)
            self._buckets.clear()

    def take(self, principal_id: str, kind: str) -> Outcome:
        """Spend one token of ``kind`` for ``principal_id`` if one is left."""
        if not self.enabled:
            return Outcome(True, None)
        burst, rate = self.limits[kind]
        now = self._twin.clock.time()
        with self._lock:
            bucket = self._buckets.setdefault((principal_id, kind), _Bucket(burst, now))
            bucket.tokens = min(burst, bucket.tokens + max(0.0, now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return Outcome(True, int(bucket.tokens))
            return Outcome(False, 0, max(1, math.ceil((1 - bucket.tokens) / rate)))
