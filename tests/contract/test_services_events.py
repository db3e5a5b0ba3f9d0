"""EventPublisher against the twin's Event Grid topic with the real azure-eventgrid client."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from pydantic import ValidationError

from localdev.twin import roles
from localdev.twin.core import Twin
from skr.errors import Operation, SkrError, classify
from skr.models import (
    FailureCode,
    OffboardingResult,
    OnboardingResult,
    Outcome,
    ReleaseOutcome,
    ReleaseReport,
    VmResourceId,
)
from skr.services.events import EventPublisher, EventType, build_event
from tests.contract._services_support import app_settings, factory_for, started_twin, unique

FAKE_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ2bSJ9.c2lnbmF0dXJl"


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    with started_twin() as started:
        yield started


def vm_id(twin: Twin) -> VmResourceId:
    return VmResourceId.parse(twin.vm_resource_id(unique("cvm")))


def released(vm: VmResourceId, **overrides: Any) -> dict[str, Any]:
    report = ReleaseReport(outcome=ReleaseOutcome.RELEASED, key_id="https://v.vault.azure.net/keys/k/abc", attempts=2)
    result = OnboardingResult(
        vm_id=vm,
        outcome=Outcome.RELEASED,
        principal_id="7a1c1f9e-7f4c-4f36-9d5e-6a3f1b2c3d4e",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        propagation_seconds=42.5,
        release_attempts=2,
        report=report,
    ).to_json()
    result.update(overrides)
    return result


def published_for(twin: Twin, subject: VmResourceId) -> list[dict[str, Any]]:
    return [r for r in twin.events.published if r["event"].get("subject") == str(subject)]


def test_publishes_a_cloud_event_with_the_result_as_data(twin: Twin, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    subject = vm_id(twin)
    data = released(subject)
    publisher = EventPublisher(factory_for(app_settings(twin)), source="/skr-orchestrator/test")
    assert publisher.publish(EventType.ONBOARDING_SUCCEEDED, subject, data) is True
    [record] = published_for(twin, subject)
    event = record["event"]
    assert record["schema"] == "cloudevents"
    assert record["publisher"] == twin.app_principal.object_id  # token credential: no topic key configured
    assert event["type"] == "SkrOrchestrator.Onboarding.Succeeded"
    assert event["source"] == "/skr-orchestrator/test"
    assert event["specversion"] == "1.0"
    assert event["data"] == data
    assert [r.getMessage() for r in caplog.records if r.name.startswith("azure.eventgrid")] == []


def test_a_retried_publish_repeats_the_event_id(twin: Twin) -> None:
    subject = vm_id(twin)
    publisher = EventPublisher(factory_for(app_settings(twin)))
    data = released(subject)
    publisher.publish(EventType.ONBOARDING_SUCCEEDED, subject, data)
    publisher.publish(EventType.ONBOARDING_SUCCEEDED, subject, data)
    first, second = published_for(twin, subject)
    assert first["event"]["id"] == second["event"]["id"]
    other = build_event(EventType.ONBOARDING_SUCCEEDED, subject, released(subject, release_attempts=3))
    assert other.id != first["event"]["id"]  # different content, different id


def test_topic_key_is_used_when_configured(twin: Twin) -> None:
    subject = vm_id(twin)
    settings = app_settings(twin, SKR_EVENTS_TOPIC_KEY=twin.events.topic_key)
    offboarded = OffboardingResult(vm_id=subject).to_json()
    assert EventPublisher(factory_for(settings)).publish(EventType.OFFBOARDING_COMPLETED, subject, offboarded)
    [record] = published_for(twin, subject)
    assert record["publisher"] == "sas-key"
    assert record["event"]["type"] == "SkrOrchestrator.Offboarding.Completed"


def test_no_topic_configured_publishes_nothing(twin: Twin) -> None:
    subject = vm_id(twin)
    publisher = EventPublisher(factory_for(app_settings(twin, SKR_EVENTS_TOPIC_ENDPOINT=None)))
    assert publisher.publish(EventType.ONBOARDING_SUCCEEDED, subject, released(subject)) is False
    assert published_for(twin, subject) == []


def test_token_shaped_content_is_refused_and_not_sent(twin: Twin) -> None:
    subject = vm_id(twin)
    data = released(subject, detail=f"the VM printed {FAKE_JWT}")
    with pytest.raises(SkrError) as caught:
        EventPublisher(factory_for(app_settings(twin))).publish(EventType.ONBOARDING_SUCCEEDED, subject, data)
    assert caught.value.error.code is FailureCode.INTERNAL_ERROR
    assert FAKE_JWT not in str(caught.value)
    assert published_for(twin, subject) == []


def test_data_must_be_the_types_result_for_the_subject(twin: Twin) -> None:
    subject = vm_id(twin)
    publisher = EventPublisher(factory_for(app_settings(twin)))
    with pytest.raises(SkrError) as caught:
        publisher.publish(EventType.ONBOARDING_SUCCEEDED, vm_id(twin), released(subject))
    assert caught.value.error.code is FailureCode.INVALID_REQUEST
    with pytest.raises(ValidationError):
        publisher.publish(EventType.ONBOARDING_FAILED, subject, {"vm_id": str(subject), "outcome": "failed"})
    with pytest.raises(ValidationError):
        publisher.publish(EventType.OFFBOARDING_COMPLETED, subject, released(subject))
    assert published_for(twin, subject) == []


def test_our_identity_without_sender_rights_is_not_authorized() -> None:
    with started_twin() as twin:
        app = twin.app_principal.object_id
        for assignment in list(twin.rbac.assignments.values()):
            if assignment.principal_id == app and assignment.role_guid == roles.EVENTGRID_DATA_SENDER:
                twin.rbac.remove_assignment(assignment.name, propagate=False)
        subject = vm_id(twin)
        with pytest.raises(HttpResponseError) as caught:
            EventPublisher(factory_for(app_settings(twin))).publish(
                EventType.ONBOARDING_SKIPPED, subject, released(subject)
            )
        error = classify(caught.value, Operation.EVENT_PUBLISH)
        assert error.code is FailureCode.NOT_AUTHORIZED and error.status == 403
        assert twin.events.published == []
