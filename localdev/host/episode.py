"""One orchestrator episode: context JSON in, SDK state out, replayed through the shim, new events out.

This is what ``TaskOrchestrationShim`` + ``OutOfProcOrchestrationShim`` + DTFx do in one work
item, without any storage: the engine gives the stored history and the new events, and
commits what comes back in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import azure.functions as func

from localdev.host import history as h
from localdev.host.failures import (
    custom_status_too_large,
    orchestrator_failure,
    rpc_exception_message,
    worker_stack,
)
from localdev.host.shim import KnownFunctions, ScheduledAction, ShimReplay, ShimResult
from localdev.host.timefmt import format_timespan, parse_ticks

OUT_OF_PROC_MARKER = "$OutOfProcData$:"
Schema = Literal["v1", "v2", "v3"]
OutcomeKind = Literal["running", "completed", "failed", "continued_as_new"]


@dataclass(frozen=True)
class ExtensionSettings:
    """The knobs of the extension this host imitates (Azure Storage provider defaults)."""

    schema: Schema = "v3"
    max_short_timer_seconds: int = 6 * 86_400
    long_timer_interval_seconds: int = 3 * 86_400
    custom_status_limit_kb: int = 16


@dataclass
class EpisodeRequest:
    instance_id: str
    execution_id: str
    name: str
    parent_instance_id: str | None
    past: list[h.Event]
    new: list[h.Event]

    @property
    def episode_ticks(self) -> int:
        """Time of this episode: its OrchestratorStarted (the last one of the history for a replay)."""
        starts = [e for e in (*self.past, *self.new) if e["EventType"] == h.EventType.ORCHESTRATOR_STARTED]
        return parse_ticks(starts[-1]["Timestamp"]) if starts else 0


@dataclass
class EpisodeOutcome:
    kind: OutcomeKind
    new_events: list[h.Event]
    new_actions: list[ScheduledAction] = field(default_factory=list)
    result: str | None = None
    details: str | None = None
    custom_status: str | None = None
    continue_as_new_input: str | None = None
    sdk_state: dict[str, Any] | None = None
    shim: ShimResult | None = None
    warning: str | None = None


def parse_jtoken(text: str | None) -> Any:
    """``ParseToJToken``: JSON text becomes its value, anything else stays a string."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def build_context(request: EpisodeRequest, settings: ExtensionSettings) -> str:
    """The orchestration-trigger payload (``OrchestrationContextToString``)."""
    started = next((e for e in (*request.past, *request.new) if e["EventType"] == h.EventType.EXECUTION_STARTED), None)
    if started is None:
        raise ValueError(f"instance {request.instance_id!r} has no ExecutionStarted event")
    context: dict[str, Any] = {
        "history": h.with_played(request.past, True) + h.with_played(request.new, False),
        "input": parse_jtoken(started.get("Input")),
        "instanceId": request.instance_id,
        "isReplaying": bool(request.past),
        "parentInstanceId": request.parent_instance_id,
        "upperSchemaVersion": 0 if settings.schema == "v1" else 1,
        "longRunningTimerIntervalDuration": format_timespan(settings.long_timer_interval_seconds),
        "maximumShortTimerDuration": format_timespan(settings.max_short_timer_seconds),
        "defaultHttpAsyncRequestSleepTimeMillseconds": 30000,
    }
    if settings.schema == "v3":
        context["upperSchemaVersionNew"] = 2
    return json.dumps(context)


@dataclass
class SdkCall:
    """What the orchestrator function gave back: a state (maybe carrying an error) or a crash."""

    state: dict[str, Any] | None
    crash: str | None = None
    stack: str = ""


def call_orchestrator(handle: Callable[..., Any], param: str, context_json: str) -> SdkCall:
    """Invoke the real ``handle`` the way the worker does (binding name as keyword)."""
    context = func.OrchestrationContext(context_json)
    try:
        returned = handle(**{param: context})
    except Exception as exc:
        text = str(exc)
        cause = exc.__cause__ or exc
        stack = worker_stack(cause)
        if OUT_OF_PROC_MARKER in text:
            payload = text.split(OUT_OF_PROC_MARKER, 1)[1]
            try:
                state, _ = json.JSONDecoder().raw_decode(payload.lstrip())
            except ValueError:
                return SdkCall(None, crash=rpc_exception_message(exc), stack=stack)
            return SdkCall(state, stack=stack)
        return SdkCall(None, crash=rpc_exception_message(exc), stack=stack)
    try:
        state = json.loads(returned) if isinstance(returned, str) else returned
    except ValueError:
        return SdkCall(None, crash="Out of proc orchestrators must return a valid JSON schema")
    if not isinstance(state, dict):
        return SdkCall(None, crash="The data returned by the out-of-process function execution was not valid json.")
    return SdkCall(state)


def _schema_version(state: dict[str, Any]) -> int:
    value = state.get("schemaVersion", 0)
    return int(value) if isinstance(value, int) else {"Original": 0, "V2": 1, "V3": 2}.get(str(value), 0)


def _action_events(actions: list[ScheduledAction], ticks: int) -> list[h.Event]:
    events: list[h.Event] = []
    for action in actions:
        if action.kind == "task":
            events.append(h.task_scheduled(ticks, action.id, action.name or "", action.input))
        elif action.kind == "timer":
            events.append(h.timer_created(ticks, action.id, action.fire_at))
        else:
            assert action.instance_id is not None
            events.append(
                h.sub_orchestration_created(
                    ticks,
                    action.id,
                    name=action.name or "",
                    version=action.version,
                    instance_id=action.instance_id,
                    input_text=None if action.input is None else json.dumps(action.input),  # a .NET string
                )
            )
    return events


def _finish(
    kind: OutcomeKind,
    ticks: int,
    *,
    event_id: int,
    actions: list[ScheduledAction],
    result: str | None = None,
    details: str | None = None,
) -> EpisodeOutcome:
    events = _action_events(actions, ticks)
    status = {
        "completed": h.OrchestrationStatus.COMPLETED,
        "failed": h.OrchestrationStatus.FAILED,
        "continued_as_new": h.OrchestrationStatus.CONTINUED_AS_NEW,
    }.get(kind)
    if status is not None:
        events.append(h.execution_completed(ticks, event_id, status, result))
    events.append(h.orchestrator_completed(ticks))
    return EpisodeOutcome(kind, events, new_actions=actions, result=result, details=details)


def decide(
    request: EpisodeRequest,
    call: SdkCall,
    *,
    known: KnownFunctions,
    settings: ExtensionSettings,
) -> EpisodeOutcome:
    """Turn the SDK's answer into history events, like the extension's shim plus DTFx."""
    ticks = request.episode_ticks
    if call.state is None:
        reason, details = orchestrator_failure(request.name, call.crash or "unknown failure", call.stack)
        return _finish("failed", ticks, event_id=0, actions=[], result=reason, details=details)
    state = call.state
    custom_status = compact(state["customStatus"]) if "customStatus" in state else None
    if custom_status is not None:
        size = len(custom_status.encode("utf-16-le"))
        if size > settings.custom_status_limit_kb * 1024:
            error = custom_status_too_large(size, settings.custom_status_limit_kb)
            reason, details = orchestrator_failure(request.name, error)
            outcome = _finish("failed", ticks, event_id=0, actions=[], result=reason, details=details)
            outcome.sdk_state = state
            return outcome
    shim = ShimReplay(
        state.get("actions") or [],
        _schema_version(state),
        execution_id=request.execution_id,
        known=known,
    ).run([*request.past, *request.new])
    outcome = _decide_after_replay(request, state, shim, call.stack, ticks)
    outcome.sdk_state = state
    outcome.shim = shim
    outcome.custom_status = custom_status
    return outcome


def _decide_after_replay(
    request: EpisodeRequest, state: dict[str, Any], shim: ShimResult, stack: str, ticks: int
) -> EpisodeOutcome:
    if shim.nondeterminism is not None:
        details = (
            "Unhandled exception while executing orchestration: "
            f"DurableTask.Core.Exceptions.NonDeterministicOrchestrationException: {shim.nondeterminism}"
        )
        return _finish("failed", ticks, event_id=shim.next_id, actions=[], result=shim.nondeterminism, details=details)
    if shim.fault is not None:
        reason, details = orchestrator_failure(request.name, shim.fault)
        return _finish("failed", ticks, event_id=shim.next_id, actions=[], result=reason, details=details)
    error = state.get("error")
    done = bool(state.get("isDone"))
    if not shim.finished:
        outcome = _finish("running", ticks, event_id=shim.next_id, actions=shim.new_actions)
        if error or done:
            outcome.warning = (
                "the SDK reported "
                + ("an error" if error else "completion")
                + " but replay is still waiting on an action, so the instance keeps running "
                "(the Durable extension behaves the same)"
            )
        return outcome
    if error:
        reason, details = orchestrator_failure(request.name, str(error), stack)
        return _finish("failed", ticks, event_id=shim.next_id, actions=shim.new_actions, result=reason, details=details)
    if done and shim.continue_as_new:
        outcome = _finish(
            "continued_as_new",
            ticks,
            event_id=shim.next_id,
            actions=shim.new_actions,
            result=shim.continue_as_new_input,
        )
        outcome.continue_as_new_input = shim.continue_as_new_input
        return outcome
    if done:
        return _finish(
            "completed", ticks, event_id=shim.next_id, actions=shim.new_actions, result=compact(state.get("output"))
        )
    return _finish("running", ticks, event_id=shim.next_id, actions=shim.new_actions)


def run_episode(
    handle: Callable[..., Any],
    param: str,
    request: EpisodeRequest,
    *,
    known: KnownFunctions,
    settings: ExtensionSettings,
) -> EpisodeOutcome:
    call = call_orchestrator(handle, param, build_context(request, settings))
    return decide(request, call, known=known, settings=settings)
