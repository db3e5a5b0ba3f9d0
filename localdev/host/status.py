"""Status payloads of the extension's HTTP API (``StatusResponsePayload`` and ``historyEvents``)."""

from __future__ import annotations

from typing import Any

from localdev.host.episode import parse_jtoken
from localdev.host.history import Event, EventType, OrchestrationStatus
from localdev.host.store import InstanceRow
from localdev.host.timefmt import format_status_time

_RUNNING_LIKE = frozenset({"Running", "Pending", "ContinuedAsNew", "Suspended"})


def http_status_code(row: InstanceRow, *, server_error_on_failure: bool = False) -> int:
    """202 while running, 200 when finished (500 for Failed when asked), as ``HandleGetStatusRequestAsync``."""
    if row.status in _RUNNING_LIKE:
        return 202
    if row.status == "Failed" and server_error_on_failure:
        return 500
    return 200


def status_payload(
    row: InstanceRow,
    *,
    show_input: bool = True,
    history: list[Event] | None = None,
    show_history_output: bool = False,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": row.name,
        "instanceId": row.instance_id,
        "runtimeStatus": row.status,
        "input": parse_jtoken(row.input) if show_input else None,
        "customStatus": parse_jtoken(row.custom_status),
        "output": parse_jtoken(row.output),
        "createdTime": format_status_time(row.created_ticks),
        "lastUpdatedTime": format_status_time(row.updated_ticks),
    }
    if history is not None:
        payload["historyEvents"] = history_summary(history, show_output=show_history_output)
    return payload


def history_summary(events: list[Event], *, show_output: bool) -> list[dict[str, Any]]:
    """The extension's condensed history: completions carry the scheduled name and time."""
    scheduled: dict[int, Event] = {}
    summary: list[dict[str, Any]] = []
    for event in events:
        kind = EventType(event["EventType"])
        if kind in (EventType.TASK_SCHEDULED, EventType.SUB_ORCHESTRATION_CREATED, EventType.TIMER_CREATED):
            scheduled[event["EventId"]] = event
            if kind != EventType.TIMER_CREATED:
                continue
        if kind in (EventType.ORCHESTRATOR_STARTED, EventType.ORCHESTRATOR_COMPLETED):
            continue
        row: dict[str, Any] = {"EventType": _pascal(kind), "Timestamp": event["Timestamp"]}
        if kind == EventType.EXECUTION_STARTED:
            row["FunctionName"] = event.get("Name")
            if show_output:
                row["Input"] = parse_jtoken(event.get("Input"))
        elif kind in (
            EventType.TASK_COMPLETED,
            EventType.TASK_FAILED,
            EventType.SUB_ORCHESTRATION_COMPLETED,
            EventType.SUB_ORCHESTRATION_FAILED,
        ):
            origin = scheduled.get(event["TaskScheduledId"], {})
            row["FunctionName"] = origin.get("Name")
            row["ScheduledTime"] = origin.get("Timestamp")
            if kind in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED):
                row["Reason"] = event.get("Reason")
                row["Details"] = event.get("Details")
            elif show_output:
                row["Result"] = parse_jtoken(event.get("Result"))
        elif kind in (EventType.TIMER_CREATED, EventType.TIMER_FIRED):
            row["FireAt"] = event.get("FireAt")
        elif kind == EventType.EVENT_RAISED:
            row["Name"] = event.get("Name")
            if show_output:
                row["Input"] = parse_jtoken(event.get("Input"))
        elif kind == EventType.EXECUTION_COMPLETED:
            row["OrchestrationStatus"] = OrchestrationStatus(event["OrchestrationStatus"]).name.title().replace("_", "")
            if show_output:
                row["Result"] = parse_jtoken(event.get("Result"))
        elif kind == EventType.EXECUTION_TERMINATED:
            row["Input"] = event.get("Input")
        summary.append(row)
    return summary


def _pascal(kind: EventType) -> str:
    special = {
        EventType.SUB_ORCHESTRATION_CREATED: "SubOrchestrationInstanceCreated",
        EventType.SUB_ORCHESTRATION_COMPLETED: "SubOrchestrationInstanceCompleted",
        EventType.SUB_ORCHESTRATION_FAILED: "SubOrchestrationInstanceFailed",
    }
    return special.get(kind) or "".join(part.title() for part in kind.name.split("_"))
