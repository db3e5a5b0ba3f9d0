"""Event Grid trigger: a VM written -> onboard it; a VM deleted -> offboard it; anything else ignored.

Delivery is at-least-once and unordered, and our own run-command and role-assignment writes come
back as events too. A bad event is logged and dropped (never an exception, never an instance);
a failure to reach the Durable client is raised so Event Grid redelivers the event.
"""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from skr import clients
from skr.models import OnboardingRequest, TriggerSource
from skr.workflow.configure import scope_guard
from skr.workflow.events import EventAction, EventDecision, classify_event
from triggers._azure import read_identity
from triggers._instances import Instances, OffboardSkip, start_offboarding, start_onboarding

bp = df.Blueprint()
log = logging.getLogger("skr.triggers.events")


def event_payload(event: func.EventGridEvent | func.CloudEvent) -> dict[str, Any]:
    """The event as JSON, whichever schema the subscription delivers (``get_json`` is the data)."""
    try:
        data = event.get_json()
    except ValueError:
        data = None
    if isinstance(event, func.CloudEvent):
        return {"id": event.id, "source": event.source, "subject": event.subject, "type": event.type, "data": data}
    return {
        "id": event.id,
        "topic": event.topic,
        "subject": event.subject,
        "eventType": event.event_type,
        "data": data,
    }


async def handle_event(payload: dict[str, Any], instances: Instances) -> EventDecision:
    decision = classify_event(payload)
    if decision.action is EventAction.MALFORMED:
        log.warning("dropping malformed event %s (%s): %s", decision.event_id, decision.event_type, decision.reason)
        return decision
    if decision.action is EventAction.IGNORE or decision.vm_id is None:
        log.debug("ignoring event %s: %s", decision.event_id, decision.reason)
        return decision
    vm_id = decision.vm_id
    settings = clients.get_settings()
    if scope_guard(settings).check_id(vm_id) is not None:
        log.info("ignoring event %s: %s is outside the configured scopes", decision.event_id, vm_id)
        return decision
    if decision.action is EventAction.ONBOARD:
        request = OnboardingRequest(vm_id=vm_id, source=TriggerSource.EVENT, correlation_id=decision.correlation_id)
        taken, instance_id = await start_onboarding(
            instances, request, settings, explicit=False, identity=lambda: read_identity(vm_id)
        )
        log.info("event %s for %s: %s (%s)", decision.event_id, instance_id, taken.action.value, taken.reason)
    else:
        try:
            instance_id = await start_offboarding(instances, vm_id, settings, source=TriggerSource.EVENT)
            log.info("event %s: offboarding %s", decision.event_id, instance_id)
        except OffboardSkip as skip:
            log.info("event %s: no offboarding: %s", decision.event_id, skip)
    return decision


@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def on_resource_event(
    event: func.EventGridEvent | func.CloudEvent, client: df.DurableOrchestrationClient
) -> None:
    await handle_event(event_payload(event), Instances(client))
