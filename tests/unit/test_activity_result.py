"""The activity envelope: JSON shape, round trips through parse, and rejection of malformed envelopes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from skr.activity_result import ActivityResult, fail, ok, parse
from skr.errors import ClassifiedError, Operation
from skr.models import AssignmentRef, FailureCode, KeyRef

KEY = KeyRef(vault_url="https://vault-a.vault.azure.net", name="cvm-web-01", version="abc123")
THROTTLED = ClassifiedError(
    code=FailureCode.THROTTLED, retryable=True, retry_after_seconds=7.0, status=429, operation=Operation.KEY_WRITE
)


def test_ok_envelope_is_plain_json_and_round_trips_a_model() -> None:
    data = ok(KEY)
    assert data == {"ok": True, "value": KEY.to_json()}
    json.dumps(data)  # Durable history must be able to store it
    result = parse(data, KeyRef)
    assert result.ok and result.error is None
    assert result.value == KEY
    assert result.unwrap().kid == "https://vault-a.vault.azure.net/keys/cvm-web-01/abc123"


def test_fail_envelope_round_trips_the_classification() -> None:
    data = fail(THROTTLED)
    assert data["ok"] is False and set(data) == {"ok", "error"}
    result = parse(data, KeyRef)
    assert not result.ok and result.value is None
    assert result.error == THROTTLED
    with pytest.raises(ValueError, match="throttled"):
        result.unwrap()


def test_plain_json_values_and_optional_models() -> None:
    assert parse(ok({"deleted": True}), dict[str, bool]).unwrap() == {"deleted": True}
    assert parse(ok(None), AssignmentRef | None).unwrap() is None
    assert parse(ok([KEY]), list[KeyRef]).unwrap() == [KEY]


def test_value_not_matching_the_model_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse(ok({"vault_url": "http://not-https"}), KeyRef)


@pytest.mark.parametrize(
    "data",
    [None, [], {"value": 1}, {"ok": "yes"}],
)
def test_not_an_envelope(data: Any) -> None:
    with pytest.raises(ValueError, match="not an activity result"):
        parse(data, KeyRef)


def test_failed_envelope_without_error_is_rejected() -> None:
    with pytest.raises(ValidationError):
        parse({"ok": False}, KeyRef)


def test_model_enforces_one_side() -> None:
    with pytest.raises(ValidationError):
        ActivityResult[KeyRef](ok=True, value=KEY, error=THROTTLED)
    with pytest.raises(ValidationError):
        ActivityResult[KeyRef](ok=False, value=KEY, error=THROTTLED)
    assert ActivityResult[KeyRef](ok=True, value=KEY).to_json() == ok(KEY)
    assert ActivityResult[KeyRef](ok=False, error=THROTTLED).to_json() == fail(THROTTLED)
