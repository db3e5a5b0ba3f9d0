from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from skr.models import FailureCode, Outcome, Stage
from skr.workflow.listing import ContinuationError, ListQuery, decode_token, encode_token, matches, paginate
from tests.unit.workflow_factories import T0, facts, result, snapshot


def fleet() -> list:
    released = facts("vm-a", n=1)
    denied = facts("vm-b", n=2)
    running = facts("vm-c", n=3)
    return [
        snapshot(released.vm_id, output=result(released), stage="completed", created=T0),
        snapshot(
            denied.vm_id,
            output=result(denied, Outcome.FAILED, code=FailureCode.POLICY_DENIED),
            stage="completed",
            created=T0 + timedelta(minutes=1),
        ),
        snapshot(running.vm_id, "Running", stage="releasing", created=T0 + timedelta(minutes=2)),
        snapshot(facts("vm-d", n=4).vm_id, "Terminated", created=T0 + timedelta(minutes=3)),
    ]


def ids(items: list) -> list[str]:
    return [s.instance_id.split("-")[2] for s in items]


def test_filters_by_outcome_stage_code_vm_and_time() -> None:
    snaps = fleet()
    assert ids([s for s in snaps if matches(s, ListQuery(outcome=Outcome.FAILED))]) == ["b", "d"]
    assert ids([s for s in snaps if matches(s, ListQuery(stage=Stage.RELEASING))]) == ["c"]
    assert ids([s for s in snaps if matches(s, ListQuery(failure_code=FailureCode.POLICY_DENIED))]) == ["b"]
    assert ids([s for s in snaps if matches(s, ListQuery(vm_id=facts("vm-c").vm_id))]) == ["c"]
    window = ListQuery(created_from=T0 + timedelta(seconds=30), created_to=T0 + timedelta(minutes=2))
    assert ids([s for s in snaps if matches(s, window)]) == ["b", "c"]


def test_query_parses_strings_and_naive_times_as_utc() -> None:
    query = ListQuery.model_validate({"outcome": "released", "created_from": "2024-05-01T12:00:00", "page_size": "5"})
    assert query.outcome is Outcome.RELEASED and query.page_size == 5
    assert query.created_from == T0


def test_query_rejects_bad_values_with_field_names() -> None:
    with pytest.raises(ValidationError) as caught:
        ListQuery.model_validate({"outcome": "great", "page_size": "0", "stage": "nowhere", "colour": "red"})
    fields = {err["loc"][0] for err in caught.value.errors()}
    assert fields == {"outcome", "page_size", "stage", "colour"}


def test_bad_continuation_tokens_are_rejected() -> None:
    for token in ("!!!", "eyJ4IjoxfQ", encode_token((T0, "x"))[:-3] + "AAA"):
        with pytest.raises((ContinuationError, ValidationError)):
            ListQuery(continuation=token)
    with pytest.raises(ContinuationError):
        decode_token("bm90IGpzb24")


def test_pages_walk_everything_in_creation_order() -> None:
    snaps = fleet()
    page, token = paginate(snaps, ListQuery(page_size=3))
    assert ids(page) == ["a", "b", "c"] and token is not None
    page2, token2 = paginate(snaps, ListQuery(page_size=3, continuation=token))
    assert ids(page2) == ["d"] and token2 is None


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=40), st.integers(min_value=1, max_value=7))
def test_paging_yields_each_match_exactly_once(offsets: list[int], size: int) -> None:
    snaps = [
        snapshot(facts(f"vm{i}").vm_id, created=T0 + timedelta(seconds=offset)) for i, offset in enumerate(offsets)
    ]
    seen: list[str] = []
    token = None
    for _ in range(len(snaps) + 2):
        page, token = paginate(snaps, ListQuery(page_size=size, continuation=token))
        seen.extend(s.instance_id for s in page)
        if token is None:
            break
    assert sorted(seen) == sorted(s.instance_id for s in snaps)
    assert len(seen) == len(set(seen))
