"""DTFx history events as the extension serialises them (PascalCase, integer ``EventType``).

Events are plain dicts so they go to SQLite, to the SDK and to golden files unchanged.
``IsPlayed`` is not stored: it is derived per episode (past events played, new ones not).
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

from localdev.host.timefmt import format_ticks

Event = dict[str, Any]


class EventType(IntEnum):
    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_FAILED = 2
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    SUB_ORCHESTRATION_CREATED = 7
    SUB_ORCHESTRATION_COMPLETED = 8
    SUB_ORCHESTRATION_FAILED = 9
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_SENT = 14
    EVENT_RAISED = 15
    CONTINUE_AS_NEW = 16
    GENERIC = 17
    HISTORY_STATE = 18
    EXECUTION_SUSPENDED = 19
    EXECUTION_RESUMED = 20


class OrchestrationStatus(IntEnum):
    """DTFx ``OrchestrationStatus`` as written into ExecutionCompleted."""

    RUNNING = 0
    COMPLETED = 1
    CONTINUED_AS_NEW = 2
    FAILED = 3
    CANCELED = 4
    TERMINATED = 5
    PENDING = 6
    SUSPENDED = 7


def _event(kind: EventType, event_id: int, ticks: int, **fields: Any) -> Event:
    return {"EventType": int(kind), "EventId": event_id, "Timestamp": format_ticks(ticks), **fields}


def orchestrator_started(ticks: int) -> Event:
    return _event(EventType.ORCHESTRATOR_STARTED, -1, ticks)


def orchestrator_completed(ticks: int) -> Event:
    return _event(EventType.ORCHESTRATOR_COMPLETED, -1, ticks)


def execution_started(
    ticks: int,
    *,
    name: str,
    version: str,
    input_text: str | None,
    instance_id: str,
    execution_id: str,
    parent: dict[str, Any] | None = None,
) -> Event:
    return _event(
        EventType.EXECUTION_STARTED,
        -1,
        ticks,
        Name=name,
        Version=version,
        Input=input_text,
        OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
        ParentInstance=parent,
        Tags=None,
        ScheduledStartTime=None,
        Generation=0,
    )


def execution_completed(ticks: int, event_id: int, status: OrchestrationStatus, result: str | None) -> Event:
    return _event(
        EventType.EXECUTION_COMPLETED,
        event_id,
        ticks,
        OrchestrationStatus=int(status),
        Result=result,
        FailureDetails=None,
    )


def execution_terminated(ticks: int, reason: str | None) -> Event:
    return _event(EventType.EXECUTION_TERMINATED, -1, ticks, Input=reason)


def task_scheduled(ticks: int, task_id: int, name: str, input_text: str | None) -> Event:
    # DTFx serialises the parameter array; the activity's single argument is the SDK's JSON text.
    return _event(EventType.TASK_SCHEDULED, task_id, ticks, Name=name, Version="", Input=json.dumps([input_text]))


def task_completed(ticks: int, task_id: int, result: str | None) -> Event:
    return _event(EventType.TASK_COMPLETED, -1, ticks, TaskScheduledId=task_id, Result=result)


def _failed(kind: EventType, ticks: int, task_id: int, reason: str, details: str | None) -> Event:
    return _event(kind, -1, ticks, TaskScheduledId=task_id, Reason=reason, Details=details, FailureDetails=None)


def task_failed(ticks: int, task_id: int, reason: str, details: str | None) -> Event:
    return _failed(EventType.TASK_FAILED, ticks, task_id, reason, details)


def sub_orchestration_created(
    ticks: int, task_id: int, *, name: str, version: str | None, instance_id: str, input_text: str | None
) -> Event:
    return _event(
        EventType.SUB_ORCHESTRATION_CREATED,
        task_id,
        ticks,
        Name=name,
        Version=version or "",
        InstanceId=instance_id,
        Input=input_text,
    )


def sub_orchestration_completed(ticks: int, task_id: int, result: str | None) -> Event:
    return _event(EventType.SUB_ORCHESTRATION_COMPLETED, -1, ticks, TaskScheduledId=task_id, Result=result)


def sub_orchestration_failed(ticks: int, task_id: int, reason: str, details: str | None) -> Event:
    return _failed(EventType.SUB_ORCHESTRATION_FAILED, ticks, task_id, reason, details)


def timer_created(ticks: int, timer_id: int, fire_at: str) -> Event:
    return _event(EventType.TIMER_CREATED, timer_id, ticks, FireAt=fire_at)


def timer_fired(ticks: int, timer_id: int, fire_at: str) -> Event:
    return _event(EventType.TIMER_FIRED, -1, ticks, TimerId=timer_id, FireAt=fire_at)


def event_raised(ticks: int, name: str, input_text: str | None) -> Event:
    return _event(EventType.EVENT_RAISED, -1, ticks, Name=name, Input=input_text)


def activity_input(scheduled: Event) -> str:
    """The activity's input datum (JSON text) back from a stored TaskScheduled event."""
    params = json.loads(scheduled["Input"])
    value = params[0] if isinstance(params, list) and params else None
    return value if isinstance(value, str) else json.dumps(value)


def with_played(events: list[Event], played: bool) -> list[Event]:
    return [{**event, "IsPlayed": played} for event in events]
