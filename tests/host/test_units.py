"""Pure parts of the host: .NET time text, NCRONTAB, route templates and the shim/DTFx replay rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from localdev.host import history as h
from localdev.host.ncrontab import ScheduleError, parse_schedule
from localdev.host.routes import RouteError, RouteTemplate
from localdev.host.shim import KnownFunctions, ShimReplay
from localdev.host.timefmt import format_ticks, format_timespan, parse_ticks, ticks_from_seconds

T0 = ticks_from_seconds(datetime(2024, 5, 1, tzinfo=UTC).timestamp())
KNOWN = KnownFunctions.of(["a", "b", "c"], ["child"])


# --- time text --------------------------------------------------------------------------------------
def test_dotnet_time_text_round_trips_at_tick_precision() -> None:
    ticks = T0 + 1_234_567
    assert format_ticks(ticks) == "2024-05-01T00:00:00.1234567Z"
    assert parse_ticks(format_ticks(ticks)) == ticks
    assert parse_ticks("2024-05-01T02:00:00.123456+02:00") == T0 + 1_234_560
    assert parse_ticks("2024-05-01T00:00:00") == T0
    with pytest.raises(ValueError, match="not an ISO-8601"):
        parse_ticks("yesterday")


def test_timespan_c_format() -> None:
    assert format_timespan(6 * 86400) == "6.00:00:00"
    assert format_timespan(3 * 3600 + 61) == "03:01:01"


# --- NCRONTAB ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", "2024-05-01T10:02:30", "2024-05-01T10:05:00"),
        ("*/10 * * * * *", "2024-05-01T10:02:30", "2024-05-01T10:02:40"),
        ("0 30 9 * * Mon-Fri", "2024-05-03T10:00:00", "2024-05-06T09:30:00"),  # Friday -> Monday
        ("0 0 0 13 * Fri", "2024-01-01T00:00:00", "2024-09-13T00:00:00"),  # day AND weekday, like NCrontab
        ("0 0 12 1 Jan,Jul *", "2024-05-01T00:00:00", "2024-07-01T12:00:00"),
        ("00:05:00", "2024-05-01T10:02:30", "2024-05-01T10:07:30"),
    ],
)
def test_schedule_next_occurrence(expression: str, after: str, expected: str) -> None:
    start = datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert parse_schedule(expression).next_after(start) == datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("*/5 * * * *", "has 5 fields"),
        ("0 0 25 * * *", "outside 0-23"),
        ("0 0 0 * Foo *", "not a number or a known name"),
        ("0 10-5 * * * *", "runs backwards"),
        ("0 */0 * * * *", "bad step"),
        ("00:00:00", "must be positive"),
    ],
)
def test_bad_schedules_are_rejected(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(expression)


# --- routes -----------------------------------------------------------------------------------------------
def test_route_templates() -> None:
    item = RouteTemplate.parse("items/{id:int}/{name?}")
    assert item.match("items/5") == {"id": "5"}
    assert item.match("ITEMS/5/x") == {"id": "5", "name": "x"}
    assert item.match("items/x") is None
    assert item.match("items/5/x/y") is None
    assert RouteTemplate.parse("files/{*path}").match("files/a/b/c") == {"path": "a/b/c"}
    assert RouteTemplate.parse("v/{kind=all}").match("v") == {"kind": "all"}
    assert RouteTemplate.parse("a/b").precedence < RouteTemplate.parse("a/{x}").precedence
    with pytest.raises(RouteError, match="mixed"):
        RouteTemplate.parse("file.{ext}")


# --- shim / DTFx replay rules -------------------------------------------------------------------------------
def _activity(name: str, value: Any = None) -> dict[str, Any]:
    return {"actionType": 0, "functionName": name, "input": str(value)}


def _timer(seconds: int, canceled: bool = False) -> dict[str, Any]:
    return {"actionType": 5, "fireAt": format_ticks(T0 + seconds * 10_000_000), "isCanceled": canceled}


def _start() -> list[h.Event]:
    return [
        h.orchestrator_started(T0),
        h.execution_started(T0, name="o", version="", input_text=None, instance_id="i", execution_id="E"),
    ]


def _replay(actions: list[dict[str, Any]], events: list[h.Event], schema: int = 2) -> Any:
    return ShimReplay([actions] if schema else actions, schema, execution_id="E", known=KNOWN).run(events)


def test_ids_follow_invocation_order_and_events_take_none() -> None:
    actions = [
        {"actionType": 6, "externalEventName": "go", "reason": "ExternalEvent"},
        {"actionType": 12, "compoundActions": [_activity("a"), _timer(60, canceled=True), _activity("b")]},
    ]
    result = _replay(actions, [*_start(), h.event_raised(T0, "GO", '"x"')])
    assert [(a.id, a.kind) for a in result.new_actions] == [(0, "task"), (1, "timer"), (2, "task")]


def test_when_all_waits_for_every_child_even_after_a_failure() -> None:
    actions = [{"actionType": 12, "compoundActions": [_activity("a"), _activity("b")]}, _activity("c")]
    scheduled = [h.task_scheduled(T0, 0, "a", "None"), h.task_scheduled(T0, 1, "b", "None")]
    first = [*_start(), *scheduled, h.orchestrator_completed(T0), h.orchestrator_started(T0)]
    after_failure = _replay(actions, [*first, h.task_failed(T0, 0, "nope", None)])
    assert after_failure.new_actions == [] and not after_failure.finished
    after_both = _replay(actions, [*first, h.task_failed(T0, 0, "nope", None), h.task_completed(T0, 1, "1")])
    assert [(a.id, a.name) for a in after_both.new_actions] == [(2, "c")]


def test_retry_layout_and_extra_timer() -> None:
    action = {
        "actionType": 1,
        "functionName": "a",
        "input": "1",
        "retryOptions": {"firstRetryIntervalInMilliseconds": 5000, "maxNumberOfAttempts": 2},
    }
    events = [*_start(), h.task_scheduled(T0, 0, "a", "1"), h.orchestrator_completed(T0)]
    events += [h.orchestrator_started(T0 + 7), h.task_failed(T0 + 7, 0, "x", None)]
    result = _replay([action], events)
    (timer,) = result.new_actions
    assert (timer.id, timer.kind, timer.fire_at_ticks) == (1, "timer", T0 + 7 + 5000 * 10_000)
    events += [h.timer_created(T0, 1, timer.fire_at), h.orchestrator_completed(T0), h.orchestrator_started(T0)]
    events += [h.timer_fired(T0, 1, timer.fire_at)]
    assert [a.id for a in _replay([action], events).new_actions] == [2]
    events += [h.task_scheduled(T0, 2, "a", "1"), h.orchestrator_completed(T0), h.orchestrator_started(T0)]
    events += [h.task_failed(T0, 2, "x", None)]
    last = _replay([action], events)
    assert [(a.id, a.kind) for a in last.new_actions] == [(3, "timer")]  # one more timer after the last attempt
    assert not last.finished


def test_nondeterminism_messages() -> None:
    missing = _replay([], [*_start(), h.task_scheduled(T0, 0, "a", "1")])
    assert missing.nondeterminism is not None
    assert "scheduled an activity task with sequence ID 0 and name 'a' (version '')" in missing.nondeterminism
    other = _replay([_timer(5)], [*_start(), h.task_scheduled(T0, 0, "a", "1")])
    assert other.nondeterminism is not None and "produced a CreateTimerOrchestratorAction" in other.nondeterminism
    sub = {"actionType": 2, "functionName": "child", "input": "1", "instanceId": None}
    renamed = _replay(
        [sub],
        [*_start(), h.sub_orchestration_created(T0, 0, name="other", version="", instance_id="E:0", input_text=None)],
    )
    assert renamed.nondeterminism is not None and "with name child" in renamed.nondeterminism
    same = _replay([_activity("A")], [*_start(), h.task_scheduled(T0, 0, "a", "None")])
    assert same.nondeterminism is None  # DTFx compares names case-insensitively


def test_derived_sub_orchestration_id_and_faults() -> None:
    sub = {"actionType": 2, "functionName": "child", "input": "1", "instanceId": None, "version": None}
    (created,) = _replay([_timer(1), sub], [*_start(), h.timer_fired(T0, 0, format_ticks(T0))]).new_actions[1:]
    assert created.instance_id == "E:1"
    assert (
        _replay([{"actionType": 11, "compoundActions": []}], _start()).fault == "The tasks argument contains no tasks."
    )
    assert "unexpected action type" in _replay([{"actionType": 42}], _start()).fault
    assert "doesn't exist" in _replay([_activity("zzz")], _start()).fault
    bad_retry = {"actionType": 1, "functionName": "a", "retryOptions": {"firstRetryIntervalInMilliseconds": 1}}
    assert "maxNumberOfAttempts >= 1" in _replay([bad_retry], _start()).fault


def test_schema_v1_action_sets_wait_for_any() -> None:
    sets = [[_activity("a"), _activity("b")], [_activity("c")]]
    scheduled = [h.task_scheduled(T0, 0, "a", "None"), h.task_scheduled(T0, 1, "b", "None")]
    events = [*_start(), *scheduled, h.orchestrator_completed(T0), h.orchestrator_started(T0)]
    result = _replay(sets, [*events, h.task_completed(T0, 1, "1")], schema=0)
    assert [a.name for a in result.new_actions] == ["c"]


def test_continue_as_new_is_recorded() -> None:
    result = _replay([{"actionType": 4, "input": "7"}], _start())
    assert result.finished and result.continue_as_new and result.continue_as_new_input == "7"


def test_indexing_leaves_the_apps_single_get_functions_call_to_others() -> None:
    import azure.durable_functions as df

    from localdev.host.registry import build_registry

    blueprint = df.Blueprint()

    @blueprint.activity_trigger(input_name="value")
    def echo(value: str) -> str:
        return value

    app, other = df.DFApp(), df.DFApp()
    app.register_functions(blueprint)
    other.register_functions(blueprint)
    first = build_registry(app)
    assert [f.get_function_name() for f in app.get_functions()] == ["echo"]  # still allowed after the host
    other.get_functions()  # someone indexed first ...
    assert sorted(build_registry(other).activities) == ["echo"]  # ... and the host still can
    assert first.activity("ECHO") is not None
