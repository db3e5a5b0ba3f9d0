"""Percentiles and distributions used by the demo summary and the benchmarks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localdev.demo_stats import distribution, mean, percentile


def test_percentile_interpolates_linearly_like_numpy() -> None:
    data = [10.0, 20.0, 30.0, 40.0]
    assert percentile(data, 50) == 25.0
    assert percentile(data, 95) == pytest.approx(38.5)
    assert percentile(data, 0) == 10.0
    assert percentile(data, 100) == 40.0
    assert percentile([7.0], 95) == 7.0


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1), st.floats(0, 100))
def test_percentile_stays_within_the_data(data: list[float], q: float) -> None:
    assert min(data) <= percentile(data, q) <= max(data)


def test_distribution_reports_none_without_data_and_figures_with_it() -> None:
    assert distribution([]) == {"n": 0, "p50_s": None, "p95_s": None, "max_s": None, "mean_s": None}
    assert distribution([1.0, 2.0, 3.0]) == {"n": 3, "p50_s": 2.0, "p95_s": 2.9, "max_s": 3.0, "mean_s": 2.0}


def test_empty_and_out_of_range_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match="empty"):
        mean([])
