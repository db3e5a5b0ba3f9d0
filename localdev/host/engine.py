"""The runtime: episodes, activity dispatch, durable timers and instance management, on one event loop.

Clock contract (``localdev/clock.py``): the engine holds one busy token while it has runnable work
(dirty instances, activities in flight, timer hand-offs, requests - see ``work``) and takes the
next unit of work before it finishes the current one, so a virtual clock only jumps when the whole
host is idle. Durable timers are registered with ``clock.call_at``; their callback takes busy on
the clock thread before handing over to the loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from localdev.clock import Clock, TimerHandle
from localdev.host import history as h
from localdev.host.episode import EpisodeOutcome, EpisodeRequest, ExtensionSettings, SdkCall, decide, run_episode
from localdev.host.invoke import Invoker
from localdev.host.logs import HOST_LOGGER, Scope, scoped
from localdev.host.registry import Registry
from localdev.host.shim import KnownFunctions, ScheduledAction, ShimError
from localdev.host.store import EpisodeCommit, InboxMessage, InstanceRow, Query, Store
from localdev.host.timefmt import parse_ticks, seconds_from_ticks, ticks_from_seconds

log = logging.getLogger(HOST_LOGGER)
TimerKey = tuple[str, str, int]
Outcome = Literal["accepted", "not_found", "gone"]


class StartError(ValueError):
    """An instance that cannot be started (unknown orchestrator, bad input)."""


class QueryError(ValueError):
    """A malformed list/purge query (bad continuation token)."""


class ConflictError(Exception):
    """An instance with this id exists in a state that may not be overwritten."""


@dataclass(frozen=True)
class EngineConfig:
    task_hub: str = "TestHubName"
    default_version: str = ""
    extension: ExtensionSettings = field(default_factory=ExtensionSettings)
    overwrite_running: bool = True
    max_concurrent_activities: int = 10


@dataclass(frozen=True)
class ActivityCall:
    """One execution of an activity (retries and at-least-once re-runs each count)."""

    name: str
    instance_id: str
    task_id: int
    input: str | None
    ok: bool
    result: str | None
    reason: str = ""


class Engine:
    def __init__(
        self,
        *,
        registry: Registry,
        store: Store,
        clock: Clock,
        invoker: Invoker,
        config: EngineConfig,
        host_id: str,
    ) -> None:
        self.registry = registry
        self.store = store
        self.clock = clock
        self.invoker = invoker
        self.config = config
        self.scope = Scope(host_id)
        self.activity_overrides: dict[str, Callable[..., Any]] = {}
        self.activity_calls: list[ActivityCall] = []
        self.episodes = 0
        self._known = KnownFunctions.of(registry.activities, registry.orchestrators)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._work = 0
        self._dirty: dict[str, None] = {}
        self._wakeup: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._timers: dict[TimerKey, TimerHandle] = {}
        self._activities: dict[TimerKey, asyncio.Task[None]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Event()
        self._slots = asyncio.Semaphore(max(1, self.config.max_concurrent_activities))
        self._runner = asyncio.create_task(self._run())
        with scoped(self.scope):
            self.recover()

    async def close(self) -> None:
        self._stopping = True
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = [t for t in (*self._activities.values(), self._runner) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while self._work > 0:
            self.work_end()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "engine not started"
        return self._loop

    # --- busy accounting ---------------------------------------------------------------------------
    def work_begin(self) -> None:
        self._work += 1
        if self._work == 1:
            self.clock.acquire_busy()

    def work_end(self) -> None:
        self._work -= 1
        if self._work == 0:
            self.clock.release_busy()
        self.notify()

    @contextmanager
    def working(self) -> Iterator[None]:
        self.work_begin()
        try:
            yield
        finally:
            self.work_end()

    def notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def changed(self, timeout: float) -> None:
        assert self._changed is not None
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return
        self._changed.clear()

    def is_idle(self, *, include_timers: bool) -> bool:
        return self._work == 0 and not self._dirty and not (include_timers and self._timers)

    def pending(self) -> dict[str, Any]:
        return {
            "work": self._work,
            "dirty": list(self._dirty),
            "activities": [f"{k[0]}#{k[2]}" for k in self._activities],
            "timers": [f"{k[0]}#{k[2]}" for k in self._timers],
        }

    def now_ticks(self) -> int:
        return ticks_from_seconds(self.clock.time())

    # --- work items --------------------------------------------------------------------------------
    def mark_dirty(self, instance_id: str) -> None:
        if instance_id in self._dirty:
            return
        self.work_begin()
        self._dirty[instance_id] = None
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while not self._stopping:
            if not self._dirty:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            instance_id = next(iter(self._dirty))
            del self._dirty[instance_id]
            try:
                with scoped(self.scope, instance_id=instance_id):
                    self._episode(instance_id)
            except Exception:
                log.exception("local host error while running an episode of %s", instance_id)
            finally:
                self.work_end()
            await asyncio.sleep(0)

    def recover(self) -> None:
        """Re-derive queued work from the store (start-up after a crash or a stop)."""
        for row in self.store.non_terminal():
            events = self.store.history(row.instance_id)
            inbox = self.store.inbox(row.instance_id)
            seen = [*events, *(m.event for m in inbox if m.execution_id in (None, row.execution_id))]
            finished = {e["TaskScheduledId"] for e in seen if e["EventType"] in (5, 6)}
            fired = {e["TimerId"] for e in seen if e["EventType"] == h.EventType.TIMER_FIRED}
            for event in events:
                if event["EventType"] == h.EventType.TASK_SCHEDULED and event["EventId"] not in finished:
                    self._start_activity(row, event["EventId"], event["Name"], h.activity_input(event))
                elif event["EventType"] == h.EventType.TIMER_CREATED and event["EventId"] not in fired:
                    self._arm_timer(row, event["EventId"], event["FireAt"])
            if inbox:
                self.mark_dirty(row.instance_id)

    # --- episodes ----------------------------------------------------------------------------------
    def _episode(self, instance_id: str) -> None:
        row = self.store.get(instance_id)
        messages = self.store.inbox(instance_id)
        if not messages:
            return
        if row is None or row.terminal:
            self.store.drop_messages([m.id for m in messages])
            return
        current = [m for m in messages if m.execution_id in (None, row.execution_id)]
        stale = [m.id for m in messages if m.execution_id not in (None, row.execution_id)]
        if stale:
            self.store.drop_messages(stale)
        terminate = next((m for m in current if m.event["EventType"] == h.EventType.EXECUTION_TERMINATED), None)
        if terminate is not None:
            self._terminate_episode(row, current, terminate.event.get("Input"))
            return
        if row.status == "Suspended" or not current:
            return
        past = self.store.history(instance_id)
        fired = [parse_ticks(m.event["FireAt"]) for m in current if m.event["EventType"] == h.EventType.TIMER_FIRED]
        ticks = max([self.now_ticks(), *fired])
        new = [h.orchestrator_started(ticks), *(m.event for m in current)]
        if not any(e["EventType"] == h.EventType.EXECUTION_STARTED for e in (*past, *new)):
            log.error("instance %s has messages but was never started; dropping them", instance_id)
            self.store.drop_messages([m.id for m in current])
            return
        info = self.registry.orchestrator(row.name)
        request = EpisodeRequest(instance_id, row.execution_id, row.name, row.parent_instance_id, past, new)
        if info is None:
            outcome = self._missing_orchestrator(request)
        else:
            with scoped(self.scope, function=info.name, instance_id=instance_id):
                outcome = run_episode(
                    info.user_function, info.trigger_param, request, known=self._known, settings=self.config.extension
                )
        self.episodes += 1
        self._commit(row, current, new, outcome, ticks)

    def _missing_orchestrator(self, request: EpisodeRequest) -> EpisodeOutcome:
        """The orchestrator vanished from the app after the instance started (a code change)."""
        try:
            self._known.check(request.name, "orchestrator")
            crash = f"orchestrator {request.name!r} is not registered"
        except ShimError as exc:
            crash = str(exc)
        return decide(request, SdkCall(None, crash=crash), known=self._known, settings=self.config.extension)

    def _commit(
        self,
        row: InstanceRow,
        consumed: list[InboxMessage],
        new: list[h.Event],
        outcome: EpisodeOutcome,
        ticks: int,
    ) -> None:
        updated = replace(row, updated_ticks=ticks, status="Running")
        if outcome.custom_status is not None:
            updated.custom_status = outcome.custom_status
        append = [*new, *outcome.new_events]
        messages: list[tuple[str, str | None, h.Event]] = []
        upserts: list[InstanceRow] = []
        replace_history = False
        if outcome.kind == "completed":
            updated.status, updated.output = "Completed", outcome.result
            messages += self._notify_parent(row, ticks, ok=True, result=outcome.result)
        elif outcome.kind == "failed":
            updated.status, updated.output, updated.failure_details = "Failed", outcome.result, outcome.details
            messages += self._notify_parent(row, ticks, ok=False, result=outcome.result, details=outcome.details)
            log.error("Orchestration '%s' (%s) failed: %s", row.name, row.instance_id, outcome.result)
        elif outcome.kind == "continued_as_new":
            execution_id = uuid.uuid4().hex
            input_text = _dotnet_string(outcome.continue_as_new_input)
            updated = replace(
                updated, status="ContinuedAsNew", execution_id=execution_id, input=input_text, output=None
            )
            replace_history, append = True, []
            started = h.execution_started(
                ticks,
                name=row.name,
                version=row.version,
                input_text=input_text,
                instance_id=row.instance_id,
                execution_id=execution_id,
                parent=_parent_of(row),
            )
            messages.append((row.instance_id, execution_id, started))
        if outcome.warning:
            log.warning("instance %s: %s", row.instance_id, outcome.warning)
        for action in outcome.new_actions:
            if action.kind == "suborch":
                assert action.instance_id is not None
                child, message = self._sub_orchestration(row, action.id, action, ticks)
                if child is not None:
                    upserts.append(child)
                messages.append(message)
        self.store.commit_episode(
            EpisodeCommit(updated, append, [m.id for m in consumed], replace_history, messages, upserts)
        )
        self.store.set_meta("clock_ticks", ticks)
        self._after_commit(row, updated, outcome, messages)

    def _after_commit(
        self,
        before: InstanceRow,
        after: InstanceRow,
        outcome: EpisodeOutcome,
        messages: list[tuple[str, str | None, h.Event]],
    ) -> None:
        if after.terminal or after.execution_id != before.execution_id:
            self._cancel_timers(before.instance_id)
        if not after.terminal and after.execution_id == before.execution_id:
            for action in outcome.new_actions:
                if action.kind == "task":
                    self._start_activity(after, action.id, action.name or "", action.input)
                elif action.kind == "timer":
                    self._arm_timer(after, action.id, action.fire_at)
        for target, _, _ in messages:
            self.mark_dirty(target)
        self.notify()

    def _notify_parent(
        self, row: InstanceRow, ticks: int, *, ok: bool, result: str | None, details: str | None = None
    ) -> list[tuple[str, str | None, h.Event]]:
        if row.parent_instance_id is None or row.parent_task_id is None:
            return []
        event = (
            h.sub_orchestration_completed(ticks, row.parent_task_id, result)
            if ok
            else h.sub_orchestration_failed(ticks, row.parent_task_id, result or "", details)
        )
        return [(row.parent_instance_id, row.parent_execution_id, event)]

    def _sub_orchestration(
        self, parent: InstanceRow, task_id: int, action: ScheduledAction, ticks: int
    ) -> tuple[InstanceRow | None, tuple[str, str | None, h.Event]]:
        assert action.instance_id is not None and action.name is not None
        existing = self.store.get(action.instance_id)
        if existing is not None and not existing.terminal and not self.config.overwrite_running:
            reason = (
                f"An orchestration with instance ID '{action.instance_id}' already exists "
                f"with status {existing.status}."
            )
            return None, (
                parent.instance_id,
                parent.execution_id,
                h.sub_orchestration_failed(ticks, task_id, reason, None),
            )
        child, started = _pending_instance(
            action.instance_id,
            action.name,
            action.version or "",
            _dotnet_string(action.input),
            ticks,
            parent=parent,
            task_id=task_id,
        )
        self._cancel_timers(action.instance_id)
        return child, (action.instance_id, child.execution_id, started)

    def _terminate_episode(self, row: InstanceRow, consumed: list[InboxMessage], reason: str | None) -> None:
        ticks = self.now_ticks()
        events = [
            h.orchestrator_started(ticks),
            h.execution_terminated(ticks, reason),
            h.execution_completed(ticks, -1, h.OrchestrationStatus.TERMINATED, reason),
            h.orchestrator_completed(ticks),
        ]
        updated = replace(row, status="Terminated", output=reason, updated_ticks=ticks)
        messages = self._notify_parent(row, ticks, ok=False, result=reason or "Terminated")
        self.store.commit_episode(EpisodeCommit(updated, events, [m.id for m in consumed], messages=messages))
        self._cancel_timers(row.instance_id)
        for target, _, _ in messages:
            self.mark_dirty(target)
        self.notify()

    # --- activities and timers ---------------------------------------------------------------------
    def _start_activity(self, row: InstanceRow, task_id: int, name: str, input_text: str | None) -> None:
        key = (row.instance_id, row.execution_id, task_id)
        if key in self._activities or self._stopping:
            return
        self.work_begin()
        self._activities[key] = self.loop.create_task(self._activity(key, name, input_text))

    async def _activity(self, key: TimerKey, name: str, input_text: str | None) -> None:
        instance_id, execution_id, task_id = key
        try:
            with scoped(self.scope, instance_id=instance_id):
                info = self.registry.activity(name)
                if info is None:
                    reason = f"The function '{name}' doesn't exist, is disabled, or is not an activity function."
                    event = h.task_failed(self.now_ticks(), task_id, reason, None)
                    ok, result = False, None
                else:
                    assert self._slots is not None
                    async with self._slots:  # maxConcurrentActivityFunctions
                        outcome = await self.invoker.activity(
                            info, input_text, instance_id=instance_id, override=self.activity_overrides.get(info.name)
                        )
                    ok, result, reason = outcome.ok, outcome.result, outcome.reason
                    event = (
                        h.task_completed(self.now_ticks(), task_id, outcome.result)
                        if outcome.ok
                        else h.task_failed(self.now_ticks(), task_id, outcome.reason, outcome.details)
                    )
                self.activity_calls.append(ActivityCall(name, instance_id, task_id, input_text, ok, result, reason))
                self._deliver(instance_id, execution_id, event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("local host error while running activity %s for %s", name, instance_id)
        finally:
            self._activities.pop(key, None)
            self.work_end()

    def _deliver(self, instance_id: str, execution_id: str | None, event: h.Event) -> None:
        row = self.store.get(instance_id)
        if row is None or row.terminal or (execution_id is not None and row.execution_id != execution_id):
            return  # DTFx drops messages for finished or replaced executions
        self.store.send(instance_id, execution_id, event)
        self.mark_dirty(instance_id)

    def _arm_timer(self, row: InstanceRow, timer_id: int, fire_at: str) -> None:
        key = (row.instance_id, row.execution_id, timer_id)
        if key in self._timers or self._stopping:
            return
        due = seconds_from_ticks(parse_ticks(fire_at))
        self._timers[key] = self.clock.call_at(due, lambda: self._timer_due(key, fire_at))
        self.notify()

    def _timer_due(self, key: TimerKey, fire_at: str) -> None:
        """Clock thread: take busy before handing the timer to the loop (the clock contract)."""
        self.clock.acquire_busy()
        try:
            self.loop.call_soon_threadsafe(self._timer_fired, key, fire_at)
        except RuntimeError:  # the loop is gone (host stopped)
            self.clock.release_busy()

    def _timer_fired(self, key: TimerKey, fire_at: str) -> None:
        self.work_begin()
        self.clock.release_busy()
        try:
            if self._timers.pop(key, None) is None:
                return
            instance_id, execution_id, timer_id = key
            ticks = max(self.now_ticks(), parse_ticks(fire_at))
            with scoped(self.scope, instance_id=instance_id):
                self._deliver(instance_id, execution_id, h.timer_fired(ticks, timer_id, fire_at))
        finally:
            self.work_end()

    def _cancel_timers(self, instance_id: str) -> None:
        for key in [k for k in self._timers if k[0] == instance_id]:
            self._timers.pop(key).cancel()

    # --- management API (the RPC routes and the harness call these on the loop) --------------------
    def start_instance(
        self, name: str, input_text: str | None, instance_id: str | None = None, version: str | None = None
    ) -> str:
        if self.registry.orchestrator(name) is None:
            try:
                self._known.check(name, "orchestrator")
            except ShimError as exc:
                raise StartError(str(exc)) from exc
        instance_id = instance_id or uuid.uuid4().hex
        existing = self.store.get(instance_id)
        if existing is not None and not existing.terminal and not self.config.overwrite_running:
            raise ConflictError(f"An Orchestration instance with the status {existing.status} already exists.")
        version = self.config.default_version if version is None else version
        row, started = _pending_instance(instance_id, name, version, input_text, self.now_ticks())
        self._cancel_timers(instance_id)
        self.store.reset(row, started)
        self.mark_dirty(instance_id)
        return instance_id

    def raise_event(self, instance_id: str, name: str, input_text: str | None) -> Outcome:
        row = self.store.get(instance_id)
        if row is None:
            return "not_found"
        if row.terminal:
            return "gone"
        self.store.send(instance_id, None, h.event_raised(self.now_ticks(), name, input_text))
        self.mark_dirty(instance_id)
        return "accepted"

    def terminate(self, instance_id: str, reason: str | None) -> Outcome:
        row = self.store.get(instance_id)
        if row is None:
            return "not_found"
        if row.terminal:
            return "gone"
        self.store.send(instance_id, None, h.execution_terminated(self.now_ticks(), reason))
        self.mark_dirty(instance_id)
        return "accepted"

    def suspend(self, instance_id: str) -> Outcome:
        """Park the instance: messages wait in its inbox until ``resume`` (activities still finish)."""
        return self._set_suspended(instance_id, True)

    def resume(self, instance_id: str) -> Outcome:
        return self._set_suspended(instance_id, False)

    def _set_suspended(self, instance_id: str, suspended: bool) -> Outcome:
        row = self.store.get(instance_id)
        if row is None:
            return "not_found"
        if row.terminal:
            return "gone"
        if not suspended and row.status == "Suspended":
            self.store.update_status(instance_id, "Running", self.now_ticks())
            self.mark_dirty(instance_id)
        elif suspended and row.status in ("Running", "Pending", "ContinuedAsNew"):
            self.store.update_status(instance_id, "Suspended", self.now_ticks())
        self.notify()
        return "accepted"

    def restart(self, instance_id: str, new_instance_id: bool) -> str | None:
        row = self.store.get(instance_id)
        if row is None:
            return None
        target = None if new_instance_id else instance_id
        if target is not None and not row.terminal:
            raise ConflictError("A non-terminal instance with this instance ID already exists.")
        return self.start_instance(row.name, row.input, target, row.version)

    def purge(self, instance_id: str) -> Literal["deleted", "not_found", "not_terminal"]:
        row = self.store.get(instance_id)
        if row is None:
            return "not_found"
        if not row.terminal:
            return "not_terminal"
        self.store.delete([instance_id])
        return "deleted"

    def purge_matching(self, query: Query) -> int:
        rows = [r for r in self.store.query(query) if r.terminal]
        for row in rows:
            self._cancel_timers(row.instance_id)
        return self.store.delete(r.instance_id for r in rows)

    def list_page(self, query: Query, top: int | None, token: str | None) -> tuple[list[InstanceRow], str | None]:
        rows = self.store.query(query)
        start = _decode_token(token)
        if top is None or top <= 0:
            return rows[start:], None
        page = rows[start : start + top]
        more = start + top < len(rows)
        return page, (_encode_token(start + top) if more else None)


def _pending_instance(
    instance_id: str,
    name: str,
    version: str,
    input_text: str | None,
    ticks: int,
    *,
    parent: InstanceRow | None = None,
    task_id: int | None = None,
) -> tuple[InstanceRow, h.Event]:
    """A new Pending instance row (a fresh execution id) and the ExecutionStarted message to queue."""
    row = InstanceRow(
        instance_id=instance_id,
        name=name,
        version=version,
        execution_id=uuid.uuid4().hex,
        status="Pending",
        input=input_text,
        output=None,
        failure_details=None,
        custom_status=None,
        created_ticks=ticks,
        updated_ticks=ticks,
        parent_instance_id=parent.instance_id if parent else None,
        parent_execution_id=parent.execution_id if parent else None,
        parent_task_id=task_id,
        parent_name=parent.name if parent else None,
    )
    started = h.execution_started(
        ticks,
        name=name,
        version=version,
        input_text=input_text,
        instance_id=instance_id,
        execution_id=row.execution_id,
        parent=_parent_of(row),
    )
    return row, started


def _parent_of(row: InstanceRow) -> dict[str, Any] | None:
    if row.parent_instance_id is None:
        return None
    return {
        "Name": row.parent_name,
        "Version": "",
        "TaskScheduleId": row.parent_task_id,
        "OrchestrationInstance": {"InstanceId": row.parent_instance_id, "ExecutionId": row.parent_execution_id},
    }


def _dotnet_string(json_text: str | None) -> str | None:
    """DTFx serialises the SDK's JSON text as a .NET string, so inputs arrive doubly encoded."""
    return None if json_text is None else json.dumps(json_text)


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        kind, _, value = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        offset = int(value)
    except ValueError as exc:
        raise QueryError(f"invalid continuation token {token!r}") from exc
    if kind != "offset" or offset < 0:
        raise QueryError(f"invalid continuation token {token!r}")
    return offset
