"""Event Grid resource events -> what to do (reference/azure_rest.md §5).

Events are at-least-once, unordered, and include writes we cause ourselves (run commands, role
assignments). Only a VM's own write or delete matters; everything else is ignored, and an event
we cannot read is reported as malformed so the trigger logs it and starts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from skr.models import ResourceIdError, VmResourceId
from skr.workflow._base import Frozen
from skr.workflow.progress import clip

WRITE_SUCCESS = "microsoft.resources.resourcewritesuccess"
DELETE_SUCCESS = "microsoft.resources.resourcedeletesuccess"
VALIDATION = "microsoft.eventgrid.subscriptionvalidationevent"
VM_WRITE = "microsoft.compute/virtualmachines/write"
VM_DELETE = "microsoft.compute/virtualmachines/delete"


class EventAction(StrEnum):
    ONBOARD = "onboard"
    OFFBOARD = "offboard"
    IGNORE = "ignore"
    MALFORMED = "malformed"


class EventDecision(Frozen):
    action: EventAction
    reason: str
    vm_id: VmResourceId | None = None
    event_id: str | None = None
    event_type: str | None = None
    correlation_id: str | None = None


def _text(value: Any, limit: int = 200) -> str | None:
    return clip(value, limit) if isinstance(value, str) and value else None


def classify_event(event: Mapping[str, Any]) -> EventDecision:
    """Decide what one event means; never raises on bad input.

    Accepts the Event Grid schema (``eventType``/``subject``/``data``) or a CloudEvent
    (``type``/``subject``/``data``), as the Functions runtime hands either over.
    """
    if not isinstance(event, Mapping):
        return EventDecision(action=EventAction.MALFORMED, reason="event is not a JSON object")
    event_id = _text(event.get("id"))
    raw_type = event.get("eventType", event.get("event_type", event.get("type")))
    if not isinstance(raw_type, str) or not raw_type:
        return EventDecision(action=EventAction.MALFORMED, reason="event has no event type", event_id=event_id)
    kind = raw_type.lower()
    data = event.get("data")
    correlation = _text(data.get("correlationId"), 128) if isinstance(data, Mapping) else None

    def decide(action: EventAction, reason: str, vm_id: VmResourceId | None = None) -> EventDecision:
        return EventDecision(
            action=action,
            reason=reason,
            vm_id=vm_id,
            event_id=event_id,
            event_type=clip(raw_type, 200),
            correlation_id=correlation,
        )

    if kind == VALIDATION:
        return decide(EventAction.IGNORE, "subscription validation (answered by the runtime)")
    if kind not in (WRITE_SUCCESS, DELETE_SUCCESS):
        return decide(EventAction.IGNORE, f"event type {clip(raw_type, 120)} is not handled")
    if not isinstance(data, Mapping):
        return decide(EventAction.MALFORMED, "event data is not a JSON object")
    operation = data.get("operationName")
    if not isinstance(operation, str) or not operation:
        return decide(EventAction.MALFORMED, "event data has no operationName")
    wanted = VM_WRITE if kind == WRITE_SUCCESS else VM_DELETE
    if operation.lower() != wanted:
        # Child resources (our run commands), role assignments (ours too), deployments, other types.
        return decide(EventAction.IGNORE, f"operation {clip(operation, 120)} is not a VM write or delete")
    status = data.get("status")
    if status is not None and (not isinstance(status, str) or status.lower() != "succeeded"):
        return decide(EventAction.IGNORE, f"operation status is {clip(str(status), 40)}")
    vm_id, problem = _resource(event, data)
    if vm_id is None:
        return decide(EventAction.MALFORMED, problem)
    action = EventAction.ONBOARD if kind == WRITE_SUCCESS else EventAction.OFFBOARD
    return decide(action, f"VM {operation.rsplit('/', 1)[-1]}", vm_id)


def _resource(event: Mapping[str, Any], data: Mapping[str, Any]) -> tuple[VmResourceId | None, str]:
    """The VM id from data.resourceUri (or the subject); both present must name the same VM."""
    uri = data.get("resourceUri")
    subject = event.get("subject")
    candidates = [(name, value) for name, value in (("resourceUri", uri), ("subject", subject)) if value is not None]
    if not candidates:
        return None, "event names no resource (no data.resourceUri, no subject)"
    parsed: list[VmResourceId] = []
    for name, value in candidates:
        try:
            parsed.append(VmResourceId.parse(value))
        except (ResourceIdError, ValueError) as exc:
            return None, clip(f"{name} is not a VM resource id: {exc}", 400) or ""
    if len(parsed) == 2 and parsed[0] != parsed[1]:
        return None, "subject and data.resourceUri name different VMs"
    return parsed[0], ""
