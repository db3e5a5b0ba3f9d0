from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from skr.models import FailureCode
from skr.workflow.http_api import (
    RetryFailedBody,
    StartOnboardingBody,
    error_body,
    field_errors,
    offboarding_view,
    onboarding_view,
    query_values,
)
from skr.workflow.instances import InstanceSnapshot
from tests.unit.workflow_factories import T0, facts, result, snapshot, vm_id


def test_start_body_parses_vm_id_and_key_name() -> None:
    body = StartOnboardingBody.model_validate(
        {"vm_id": str(vm_id()).upper().replace("SUBSCRIPTIONS", "subscriptions"), "key_name": "k-1"}
    )
    assert body.vm_id == vm_id() and body.key_name == "k-1"


def test_start_body_errors_name_each_field_and_the_bad_segment() -> None:
    with pytest.raises(ValidationError) as caught:
        StartOnboardingBody.model_validate(
            {"vm_id": "/subscriptions/x/secret-value", "key_name": "bad name!", "extra": 1}
        )
    errors = {e.field: e.message for e in field_errors(caught.value)}
    assert set(errors) == {"vm_id", "key_name", "extra"}
    assert "letters, digits and dashes" in errors["key_name"]
    assert "segment 3 should be 'resourceGroups'" in errors["vm_id"]
    body = error_body("invalid_request", "bad", field_errors(caught.value))
    assert body["error"]["code"] == "invalid_request" and len(body["error"]["fields"]) == 3


def test_missing_vm_id_is_reported() -> None:
    with pytest.raises(ValidationError) as caught:
        StartOnboardingBody.model_validate({})
    assert [e.field for e in field_errors(caught.value)] == ["vm_id"]


def test_retry_failed_body_defaults_and_bounds() -> None:
    assert RetryFailedBody().limit == 100
    assert (
        RetryFailedBody.model_validate({"failure_code": "rbac_propagation_timeout"}).failure_code
        is FailureCode.RBAC_PROPAGATION_TIMEOUT
    )
    with pytest.raises(ValidationError):
        RetryFailedBody.model_validate({"limit": 0})


def test_query_values_drop_the_function_key_and_empties() -> None:
    assert query_values({"code": "s3cret", "outcome": "failed", "stage": ""}) == {"outcome": "failed"}


def test_views_link_only_to_our_routes() -> None:
    f = facts()
    snap = snapshot(f.vm_id, output=result(f), stage="completed")
    off = InstanceSnapshot(instance_id="offboard-x", runtime_status="Running", created_time=T0)
    view = onboarding_view(snap, base_url="http://127.0.0.1:7071/api/onboardings", offboarding=off)
    data = view.to_json()
    text = json.dumps(data)
    assert data["vm_id"] == str(f.vm_id) and data["outcome"] == "released" and data["stage"] == "completed"
    assert data["links"]["self"] == f"http://127.0.0.1:7071/api/onboardings/{snap.instance_id}"
    assert data["offboarding"]["runtime_status"] == "Running"
    for leak in ("code=", "runtime/webhooks", "statusQueryGetUri", "sendEventPostUri"):
        assert leak not in text
    assert offboarding_view(off).result is None
