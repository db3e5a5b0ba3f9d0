"""Result events: one CloudEvent per finished onboarding/offboarding on an Event Grid topic.

The data is the orchestration result (already secret-free by construction); it is re-validated
against its model and scanned for anything token-shaped before it leaves, because an event is
delivered to subscribers we do not control. The event id is derived from the content, so an
activity retried after a lost acknowledgement publishes the same id and consumers can de-duplicate.
"""

from __future__ import annotations

import json
import re
import uuid
from enum import StrEnum
from typing import Any

from azure.core.messaging import CloudEvent

from skr.clients import ClientFactory
from skr.errors import Operation, SkrError
from skr.models import FailureCode, OffboardingResult, OnboardingResult, VmResourceId

EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:skr-orchestrator:event")
DEFAULT_SOURCE = "/skr-orchestrator"

# Token-shaped content that must never be in an event: JWT/JWS compact forms, PEM blocks,
# and the JSON members that carry released key material or tokens.
_SECRET_SHAPES = (
    re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}"),
    re.compile(r"-----BEGIN [A-Z ]+-----"),
    re.compile(r'"(?:key_hsm|access_token|refresh_token|client_secret|value)"\s*:\s*"[^"]{64,}"'),
)


class EventType(StrEnum):
    ONBOARDING_SUCCEEDED = "SkrOrchestrator.Onboarding.Succeeded"
    ONBOARDING_FAILED = "SkrOrchestrator.Onboarding.Failed"
    ONBOARDING_SKIPPED = "SkrOrchestrator.Onboarding.Skipped"
    OFFBOARDING_COMPLETED = "SkrOrchestrator.Offboarding.Completed"

    @property
    def data_model(self) -> type[OnboardingResult] | type[OffboardingResult]:
        return OffboardingResult if self is EventType.OFFBOARDING_COMPLETED else OnboardingResult


def contains_secret(text: str) -> bool:
    return any(pattern.search(text) for pattern in _SECRET_SHAPES)


def build_event(
    event_type: EventType, subject: VmResourceId, data: Any, *, source: str = DEFAULT_SOURCE
) -> CloudEvent[dict[str, Any]]:
    """Validate ``data`` against the type's result model, refuse secret-shaped content, build the event."""
    result = event_type.data_model.model_validate(data)
    if result.vm_id != subject:
        raise SkrError.of(
            FailureCode.INVALID_REQUEST,
            f"event subject {subject} is not the result's VM {result.vm_id}",
            operation=Operation.EVENT_PUBLISH,
        )
    payload = result.to_json()
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    if contains_secret(text):
        raise SkrError.of(
            FailureCode.INTERNAL_ERROR,
            f"refusing to publish {event_type.value} for {subject}: the data contains token-shaped content",
            operation=Operation.EVENT_PUBLISH,
        )
    event_id = str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{event_type.value}|{str(subject).lower()}|{text}"))
    return CloudEvent(
        source=source,
        type=event_type.value,
        subject=str(subject),
        data=payload,
        id=event_id,
        datacontenttype="application/json",
    )


class EventPublisher:
    def __init__(self, factory: ClientFactory, source: str = DEFAULT_SOURCE) -> None:
        self._factory = factory
        self._source = source

    def publish(self, event_type: EventType, subject: VmResourceId, data: Any) -> bool:
        """True when sent; False when no topic is configured (events are optional)."""
        event = build_event(event_type, subject, data, source=self._source)
        client = self._factory.events()
        if client is None:
            return False
        client.send([event])
        return True
