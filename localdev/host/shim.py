"""Replays the SDK's action list against a history the way the extension and DTFx do.

The extension's ``OutOfProcOrchestrationShim.ProcessAsyncActionsV2`` walks the actions in order,
calls the .NET API for each (``CallActivityAsync``, ``CreateTimer``, ``Task.WhenAll`` ...) and
awaits it before the next one, ignoring task exceptions. DTFx hands out sequence ids 0, 1, 2 ...
as those calls happen, replays the history against them (a TaskScheduled / TimerCreated /
SubOrchestrationInstanceCreated with no matching action, another type or another name is
non-deterministic) and emits whatever actions are left unmatched. Retries are DTFx's
``RetryInterceptor``: attempt, failure, timer, attempt ... and one more timer after the last
failure. .NET continuations run inline (DTFx uses a synchronous scheduler), which the tiny
future/generator machinery below reproduces: completing a future runs its waiters at once.

Pure logic: no I/O, no clock; time comes from the OrchestratorStarted events replayed.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal

from localdev.host.history import Event, EventType
from localdev.host.timefmt import format_ticks, parse_ticks

ActionKind = Literal["task", "timer", "suborch"]
_PENDING, _SUCCEEDED, _FAILED, _CANCELED = range(4)
_ACTION_CLASS = {
    "task": "ScheduleTaskOrchestratorAction",
    "timer": "CreateTimerOrchestratorAction",
    "suborch": "CreateSubOrchestrationAction",
}
_NOT_SUPPORTED = {
    7: "CallEntity (durable entities)",
    8: "CallHttp (durable HTTP)",
    9: "SignalEntity (durable entities)",
    10: "ScheduledSignalEntity (durable entities)",
}
_CHANGED = "Was a change made to the orchestrator code after this instance had already started running?"


class ShimError(Exception):
    """What the extension throws while replaying actions: it fails the orchestration."""


class NonDeterminismError(Exception):
    """DTFx's ``NonDeterministicOrchestrationException``."""

    def __init__(self, details: str) -> None:
        super().__init__(f"Non-Deterministic workflow detected: {details}")


class _AwaitedError(Exception):
    """Raised into a shim coroutine when the task it awaited failed or was cancelled."""


@dataclass
class ScheduledAction:
    """One DTFx orchestrator action, with the sequence id replay gave it."""

    id: int
    kind: ActionKind
    name: str | None = None
    input: str | None = None
    fire_at_ticks: int | None = None
    instance_id: str | None = None
    version: str | None = None

    @property
    def fire_at(self) -> str:
        assert self.fire_at_ticks is not None
        return format_ticks(self.fire_at_ticks)

    def describe(self) -> dict[str, Any]:
        """Stable summary used by replay reports and golden comparisons."""
        summary: dict[str, Any] = {"id": self.id, "kind": self.kind}
        if self.kind == "timer":
            summary["fireAt"] = self.fire_at
        else:
            summary["name"] = self.name
            summary["input"] = self.input
        if self.kind == "suborch":
            summary["instanceId"] = self.instance_id
        return summary


class _Future:
    __slots__ = ("_callbacks", "fire_and_forget", "state")

    def __init__(self, state: int = _PENDING, *, fire_and_forget: bool = False) -> None:
        self.state = state
        self.fire_and_forget = fire_and_forget
        self._callbacks: list[Callable[[_Future], None]] = []

    def done(self) -> bool:
        return self.state != _PENDING

    def add_callback(self, callback: Callable[[_Future], None]) -> None:
        if self.done():
            callback(self)
        else:
            self._callbacks.append(callback)

    def settle(self, state: int) -> None:
        if self.done():
            return
        self.state = state
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)


ShimCoroutine = Generator[_Future, None, None]


def _spawn(coroutine: ShimCoroutine) -> _Future:
    """Run a generator-based coroutine; futures it yields resume it inline when they settle."""
    result = _Future()

    def step(settled: _Future | None) -> None:
        while True:
            try:
                if settled is None or settled.state == _SUCCEEDED:
                    awaited = next(coroutine) if settled is None else coroutine.send(None)
                else:
                    awaited = coroutine.throw(_AwaitedError())
            except StopIteration:
                result.settle(_SUCCEEDED)
                return
            except _AwaitedError:
                result.settle(_FAILED)
                return
            if not awaited.done():
                awaited.add_callback(step)
                return
            settled = awaited

    step(None)
    return result


def _when_all(children: Sequence[_Future]) -> _Future:
    """.NET ``Task.WhenAll``: settles only once every child settled, even after a failure."""
    result = _Future()
    remaining = [len(children)]

    def on_child(_: _Future) -> None:
        remaining[0] -= 1
        if remaining[0]:
            return
        states = {child.state for child in children}
        result.settle(_FAILED if _FAILED in states else _CANCELED if _CANCELED in states else _SUCCEEDED)

    if not children:
        result.settle(_SUCCEEDED)
    for child in children:
        child.add_callback(on_child)
    return result


def _when_any(children: Sequence[_Future]) -> _Future:
    """.NET ``Task.WhenAny``: settles (successfully) when the first child settles in any way."""
    if not children:
        raise ShimError("The tasks argument contains no tasks.")
    result = _Future()
    for child in children:
        child.add_callback(lambda _: result.settle(_SUCCEEDED))
    return result


@dataclass(frozen=True)
class KnownFunctions:
    """Function names the extension knows (it compares them case-insensitively)."""

    activities: frozenset[str] = frozenset()
    orchestrators: frozenset[str] = frozenset()

    @classmethod
    def of(cls, activities: Iterable[str], orchestrators: Iterable[str]) -> KnownFunctions:
        return cls(frozenset(activities), frozenset(orchestrators))

    def check(self, name: str, kind: Literal["activity", "orchestrator"]) -> None:
        names = self.activities if kind == "activity" else self.orchestrators
        if name.lower() in {n.lower() for n in names}:
            return
        listed = "', '".join(sorted(names))
        info = (
            f"The following are the active {kind} functions: '{listed}'"
            if names
            else f"No active {kind} functions are currently registered!"
        )
        raise ShimError(
            f"The function '{name}' doesn't exist, is disabled, or is not an {kind} function. Additional info: {info}"
        )


@dataclass
class ShimResult:
    """What one replay produced: new actions to persist, and how the shim ended."""

    scheduled: list[ScheduledAction]
    new_actions: list[ScheduledAction]
    finished: bool
    next_id: int
    fault: str | None = None
    nondeterminism: str | None = None
    continue_as_new: bool = False
    continue_as_new_input: str | None = None


@dataclass
class _Waiters:
    waiting: defaultdict[str, deque[_Future]] = field(default_factory=lambda: defaultdict(deque))
    buffered: defaultdict[str, deque[str | None]] = field(default_factory=lambda: defaultdict(deque))


class ShimReplay:
    """One replay of an action list over a history; use ``run`` once."""

    def __init__(
        self,
        actions: list[list[dict[str, Any]]],
        schema_version: int,
        *,
        execution_id: str,
        known: KnownFunctions,
    ) -> None:
        self._actions = actions
        self._schema = schema_version
        self._execution_id = execution_id
        self._known = known
        self._next_id = 0
        self._now = 0
        self._pending: dict[int, ScheduledAction] = {}
        self._scheduled: list[ScheduledAction] = []
        self._open: dict[int, _Future] = {}
        self._events = _Waiters()
        self._main: _Future | None = None
        self._continue_as_new: tuple[str | None] | None = None

    # --- DTFx side: history replay -------------------------------------------------------
    def run(self, history: Iterable[Event]) -> ShimResult:
        fault: str | None = None
        nondeterminism: str | None = None
        try:
            for event in history:
                self._process(event)
        except ShimError as exc:
            fault = str(exc)
        except NonDeterminismError as exc:
            nondeterminism = str(exc)
        can = self._continue_as_new
        return ShimResult(
            scheduled=list(self._scheduled),
            new_actions=[self._pending[key] for key in sorted(self._pending)],
            finished=self._main is not None and self._main.done(),
            next_id=self._next_id,
            fault=fault,
            nondeterminism=nondeterminism,
            continue_as_new=can is not None,
            continue_as_new_input=can[0] if can is not None else None,
        )

    def _process(self, event: Event) -> None:
        kind = event["EventType"]
        if kind == EventType.ORCHESTRATOR_STARTED:
            self._now = parse_ticks(event["Timestamp"])
        elif kind == EventType.EXECUTION_STARTED:
            self._main = _spawn(self._main_v2() if self._schema >= 1 else self._main_v1())
        elif kind == EventType.TASK_SCHEDULED:
            self._match(event, "task")
        elif kind == EventType.TIMER_CREATED:
            self._match(event, "timer")
        elif kind == EventType.SUB_ORCHESTRATION_CREATED:
            self._match(event, "suborch")
        elif kind == EventType.EVENT_SENT:
            raise NonDeterminismError(
                f"A previous execution of this orchestration scheduled a send event task with sequence ID "
                f"{event['EventId']}, type '{event['EventType']}' name '{event.get('Name')}', instance ID "
                f"'{event.get('InstanceId')}', but the current replay execution hasn't (yet?) scheduled "
                f"this task. {_CHANGED}"
            )
        elif kind in (EventType.TASK_COMPLETED, EventType.SUB_ORCHESTRATION_COMPLETED):
            self._settle(event["TaskScheduledId"], _SUCCEEDED)
        elif kind in (EventType.TASK_FAILED, EventType.SUB_ORCHESTRATION_FAILED):
            self._settle(event["TaskScheduledId"], _FAILED)
        elif kind == EventType.TIMER_FIRED:
            self._settle(event["TimerId"], _SUCCEEDED)
        elif kind == EventType.EVENT_RAISED:
            self._raise_event(event["Name"], event.get("Input"))

    def _match(self, event: Event, kind: ActionKind) -> None:
        task_id = event["EventId"]
        action = self._pending.get(task_id)
        name, version = event.get("Name"), event.get("Version", "")
        if kind == "task":
            missing = (
                f"A previous execution of this orchestration scheduled an activity task with sequence ID "
                f"{task_id} and name '{name}' (version '{version}'), but the current replay execution "
                f"hasn't (yet?) scheduled this task. {_CHANGED}"
            )
            other = (
                f"A previous execution of this orchestration scheduled an activity task with sequence number "
                f"{task_id} named '{name}', but the current orchestration replay instead produced a "
                f"{{other}} action with this sequence number. {_CHANGED}"
            )
            renamed = (
                f"A previous execution of this orchestration scheduled an activity task with sequence number "
                f"{task_id} named '{name}', but the current orchestration replay instead scheduled an "
                f"activity task named '{{new}}' with this sequence number.  {_CHANGED}"
            )
        elif kind == "timer":
            missing = (
                f"A previous execution of this orchestration scheduled a timer task with sequence number "
                f"{task_id} but the current replay execution hasn't (yet?) scheduled this task. {_CHANGED}"
            )
            other = (
                f"A previous execution of this orchestration scheduled a timer task with sequence number "
                f"{task_id} named but the current orchestration replay instead produced a {{other}} action "
                f"with this sequence number. {_CHANGED}"
            )
            renamed = ""
        else:
            prefix = (
                f"A previous execution of this orchestration scheduled a sub-orchestration task with sequence "
                f"ID {task_id} and name '{name}' (version '{version}', instance ID "
                f"'{event.get('InstanceId')}'), but the current "
            )
            missing = f"{prefix}replay execution hasn't (yet?) scheduled this task. {_CHANGED}"
            other = (
                f"{prefix}orchestration replay instead produced a {{other}} action at this sequence number. {_CHANGED}"
            )
            renamed = (
                f"{prefix}orchestration replay instead scheduled a sub-orchestration task with name {{new}} "
                f"at this sequence number. {_CHANGED}"
            )
        if action is None:
            raise NonDeterminismError(missing)
        if action.kind != kind:
            raise NonDeterminismError(other.format(other=_ACTION_CLASS[action.kind]))
        if renamed and (action.name or "").lower() != str(name).lower():
            raise NonDeterminismError(renamed.format(new=action.name))
        del self._pending[task_id]

    def _settle(self, task_id: int, state: int) -> None:
        future = self._open.pop(task_id, None)
        if future is not None:  # DTFx logs duplicates and carries on
            future.settle(state)

    def _raise_event(self, name: str, input_text: str | None) -> None:
        key = name.lower()
        waiting = self._events.waiting[key]
        if waiting:
            waiting.popleft().settle(_SUCCEEDED)
        else:
            self._events.buffered[key].append(input_text)

    # --- extension side: the out-of-proc shim ----------------------------------------------
    def _main_v2(self) -> ShimCoroutine:
        if len(self._actions) != 1:
            raise ShimError(
                f"With OOProc schema V{self._schema + 1}, expected actions array to be of length 1 in "
                f"outer layer but got size: {len(self._actions)}"
            )
        for action in self._actions[0]:
            future = self._invoke(action)
            with suppress(_AwaitedError):  # task failures belong to the SDK; replay just keeps in step
                yield future

    def _main_v1(self) -> ShimCoroutine:
        for action_set in self._actions:
            waitable = [f for f in (self._invoke(a) for a in action_set) if not f.fire_and_forget]
            if waitable:
                yield _when_any(waitable)

    def _invoke(self, action: dict[str, Any]) -> _Future:
        kind = action.get("actionType")
        if kind == 0:
            self._known.check(action["functionName"], "activity")
            return self._schedule_task(action)
        if kind == 1:
            self._known.check(action["functionName"], "activity")
            return _spawn(self._retry(action, lambda: self._schedule_task(action)))
        if kind == 2:
            self._known.check(action["functionName"], "orchestrator")
            return self._create_sub_orchestration(action)
        if kind == 3:
            self._known.check(action["functionName"], "orchestrator")
            return _spawn(self._retry(action, lambda: self._create_sub_orchestration(action)))
        if kind == 4:
            self._continue_as_new = (action.get("input"),)
            return _Future(_SUCCEEDED, fire_and_forget=True)
        if kind == 5:
            future = self._create_timer(parse_ticks(action["fireAt"]))
            if action.get("isCanceled"):
                del self._open[self._scheduled[-1].id]
                future.settle(_CANCELED)
            return future
        if kind == 6:
            return self._wait_for_event(action["externalEventName"])
        if kind == 11:
            return _when_any([self._invoke(child) for child in action.get("compoundActions") or []])
        if kind == 12:
            return _when_all([self._invoke(child) for child in action.get("compoundActions") or []])
        if kind in _NOT_SUPPORTED:
            raise ShimError(
                f"The local Durable host does not support {_NOT_SUPPORTED[kind]} actions (actionType {kind})."
            )
        raise ShimError(f"Received an unexpected action type from the out-of-proc function: '${kind}'.")

    def _new(self, action: ScheduledAction) -> _Future:
        self._pending[action.id] = action
        self._scheduled.append(action)
        future = _Future()
        self._open[action.id] = future
        return future

    def _take_id(self) -> int:
        task_id = self._next_id
        self._next_id += 1
        return task_id

    def _schedule_task(self, action: dict[str, Any]) -> _Future:
        return self._new(
            ScheduledAction(self._take_id(), "task", name=action["functionName"], input=action.get("input"))
        )

    def _create_timer(self, fire_at_ticks: int) -> _Future:
        return self._new(ScheduledAction(self._take_id(), "timer", fire_at_ticks=fire_at_ticks))

    def _create_sub_orchestration(self, action: dict[str, Any]) -> _Future:
        task_id = self._take_id()
        instance_id = action.get("instanceId") or f"{self._execution_id}:{task_id}"
        return self._new(
            ScheduledAction(
                task_id,
                "suborch",
                name=action["functionName"],
                input=action.get("input"),
                instance_id=instance_id,
                version=action.get("version"),
            )
        )

    def _wait_for_event(self, name: str) -> _Future:
        key = name.lower()
        if self._events.buffered[key]:
            self._events.buffered[key].popleft()
            return _Future(_SUCCEEDED)
        future = _Future()
        self._events.waiting[key].append(future)
        return future

    def _retry(self, action: dict[str, Any], attempt: Callable[[], _Future]) -> ShimCoroutine:
        """DTFx ``RetryInterceptor.Invoke``: a timer follows every failure, the last one included."""
        options = action.get("retryOptions") or {}
        first_ms = float(options.get("firstRetryIntervalInMilliseconds", 0))
        attempts = int(options.get("maxNumberOfAttempts", 0))
        backoff = float(options.get("backoffCoefficient", 1.0))
        max_ms = options.get("maxRetryIntervalInMilliseconds")
        timeout_ms = options.get("retryTimeoutInMilliseconds")
        if first_ms <= 0 or attempts < 1:
            raise ShimError(
                f"Invalid retry options for '{action.get('functionName')}': firstRetryIntervalInMilliseconds "
                f"must be > 0 and maxNumberOfAttempts >= 1 (got {first_ms:g} and {attempts})."
            )
        first_attempt = self._now
        for retry_count in range(attempts):
            try:
                yield attempt()
                return
            except _AwaitedError:
                pass
            if timeout_ms is not None and self._now >= first_attempt + int(float(timeout_ms) * 10_000):
                break
            delay_ms = first_ms * backoff**retry_count
            if max_ms is not None:
                delay_ms = min(delay_ms, float(max_ms))
            yield self._create_timer(self._now + int(delay_ms * 10_000))
        raise _AwaitedError
