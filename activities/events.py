"""Event activity: publish the result CloudEvent (no topic configured -> published=false)."""

from __future__ import annotations

import os
from typing import Any

import azure.durable_functions as df
from pydantic import BaseModel, ConfigDict

from activities._common import factory, parse_input, run, settings
from skr.errors import Operation
from skr.models import VmResourceId
from skr.services.events import EventPublisher, EventType

bp = df.Blueprint()


class PublishInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: EventType
    subject: VmResourceId
    data: dict[str, Any]


class Published(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    published: bool


def event_source() -> str:
    """Identifies this app: the Function app's site name in Azure, else the task hub."""
    return f"/skr-orchestrator/{os.environ.get('WEBSITE_SITE_NAME') or settings().task_hub}"


@bp.activity_trigger(input_name="payload")
def publish_event(payload: Any) -> dict[str, Any]:
    """Publish one SkrOrchestrator.* CloudEvent whose data is the (re-validated, secret-checked) result."""
    request = parse_input("publish_event", PublishInput, payload)
    return run(
        "publish_event",
        Operation.EVENT_PUBLISH,
        lambda: Published(
            published=EventPublisher(factory(), event_source()).publish(request.type, request.subject, request.data)
        ),
        subject=request.subject,
    )
