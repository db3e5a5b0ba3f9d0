"""Small, dependency-free statistics shared by the demo summary and the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); ``q`` in [0, 100]."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: Iterable[float], ndigits: int = 2) -> dict[str, float | int | None]:
    """``{"n", "p50_s", "p95_s", "max_s", "mean_s"}``; figures are None when there are no values."""
    data = list(values)
    if not data:
        return {"n": 0, "p50_s": None, "p95_s": None, "max_s": None, "mean_s": None}
    return {
        "n": len(data),
        "p50_s": round(percentile(data, 50), ndigits),
        "p95_s": round(percentile(data, 95), ndigits),
        "max_s": round(max(data), ndigits),
        "mean_s": round(sum(data) / len(data), ndigits),
    }


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of an empty sequence")
    return sum(values) / len(values)
