"""External events, durable timers on the virtual clock, termination and suspension, older replay schemas."""

from __future__ import annotations

from datetime import timedelta

import pytest

from localdev.host import HostIdleError, LocalHost
from localdev.host.history import EventType
from localdev.host.timefmt import parse_ticks, seconds_from_ticks
from tests.host.conftest import FEATURES


def _kinds(host: LocalHost, instance_id: str) -> list[int]:
    return [e["EventType"] for e in host.history(instance_id)]


def _waiting(host: LocalHost, instance_id: str) -> bool:
    status = host.get_status(instance_id)
    return status is not None and status.runtime_status == "Running" and host.engine.is_idle(include_timers=False)


def test_task_any_event_wins_and_losing_timer_is_cancelled(host: LocalHost) -> None:
    with host.hold_clock():  # no time passes while the test plays the approver
        instance_id = host.start_new("race")
        host.wait_until(lambda: _waiting(host, instance_id))
        host.raise_event(instance_id, "approval", {"by": "alice"})
    status = host.wait_for(instance_id)
    # the real Python client double-encodes event data, so the orchestrator gets JSON text (#295)
    assert status.output == {"result": "approved", "data": '{"by": "alice"}'}
    report = host.replay(host.history(instance_id))
    when_any = report.sdk_state["actions"][0][0]
    assert when_any["actionType"] == 11
    assert [a["actionType"] for a in when_any["compoundActions"]] == [5, 6]
    assert when_any["compoundActions"][0]["isCanceled"] is True
    assert EventType.TIMER_FIRED not in _kinds(host, instance_id)
    assert host.engine.pending()["timers"] == []
    assert status.last_updated_time - status.created_time < timedelta(hours=1)


def test_task_any_timer_wins_after_one_virtual_day(host: LocalHost) -> None:
    status = host.wait_for(host.start_new("race"))
    assert status.output == {"result": "timed out"}
    elapsed = status.last_updated_time - status.created_time
    assert timedelta(days=1, milliseconds=-1) <= elapsed < timedelta(days=1, minutes=1)


def test_one_day_timer_finishes_instantly_on_the_virtual_clock(host: LocalHost) -> None:
    before = host.clock.time()
    status = host.wait_for(host.start_new("sleeper", 1))
    assert status.output == 86400.0
    assert host.clock.time() - before > 86399.99
    assert host.clock.jumps >= 1  # type: ignore[attr-defined]


def test_long_timer_is_split_into_three_day_chunks(host: LocalHost) -> None:
    instance_id = host.start_new("sleeper", 10)
    status = host.wait_for(instance_id)
    assert status.output == 864000.0
    history = host.history(instance_id)
    start = parse_ticks(history[0]["Timestamp"])
    fire_days = [
        round(seconds_from_ticks(parse_ticks(e["FireAt"]) - start) / 86400, 3)
        for e in history
        if e["EventType"] == EventType.TIMER_CREATED
    ]
    assert fire_days == [3.0, 6.0, 10.0]
    assert host.check_replay(instance_id).ok


def test_events_are_buffered_and_delivered_first_in_first_out(host: LocalHost) -> None:
    with host.hold_clock():
        instance_id = host.start_new("collector", 3)
        for value in range(3):  # all raised before the orchestrator ever waits
            host.raise_event(instance_id, "step", value)
    status = host.wait_for(instance_id)
    assert status.output == ["0", "1", "2"]


def test_events_raised_while_waiting_with_value_encoding(host: LocalHost) -> None:
    instance_id = host.start_new("collector", 2)
    host.wait_until(lambda: _waiting(host, instance_id))
    host.raise_event(instance_id, "step", {"a": 1}, encoding="value")
    host.wait_until(lambda: _waiting(host, instance_id) and EventType.EVENT_RAISED in _kinds(host, instance_id))
    host.raise_event(instance_id, "step", "two", encoding="value")
    assert host.wait_for(instance_id).output == [{"a": 1}, "two"]


def test_sdk_quirk_event_names_are_case_sensitive(host: LocalHost) -> None:
    # The extension matches names case-insensitively, the Python SDK does not: "STEP" never reaches
    # a wait for "step" (the SDK parks it), and the orchestration goes on waiting.
    instance_id = host.start_new("collector", 1)
    host.wait_until(lambda: _waiting(host, instance_id))
    host.raise_event(instance_id, "STEP", "upper", encoding="value")
    host.run_until_idle()
    assert host.get_status(instance_id).runtime_status == "Running"
    host.raise_event(instance_id, "step", "lower", encoding="value")
    assert host.wait_for(instance_id).output == ["lower"]


def test_raise_event_to_missing_or_finished_instances(host: LocalHost) -> None:
    with pytest.raises(LookupError, match="No instance with ID nobody found"):
        host.raise_event("nobody", "step", 1)
    done = host.start_new("chain", ["x"])
    host.wait_for(done)
    with pytest.raises(RuntimeError, match="is gone"):
        host.raise_event(done, "step", 1)


def test_wait_for_fails_fast_when_the_instance_waits_forever(host: LocalHost) -> None:
    instance_id = host.start_new("collector", 1)
    with pytest.raises(HostIdleError, match="idle"):
        host.wait_for(instance_id)


def test_terminate_running_instance(host: LocalHost) -> None:
    instance_id = host.start_new("collector", 1)
    host.wait_until(lambda: _waiting(host, instance_id))
    host.terminate(instance_id, "no longer needed")
    status = host.wait_for(instance_id)
    assert status.runtime_status == "Terminated"
    assert status.output == "no longer needed"
    assert _kinds(host, instance_id)[-4:] == [12, 3, 1, 13]


def test_suspend_holds_events_until_resume(host: LocalHost) -> None:
    instance_id = host.start_new("collector", 1)
    host.wait_until(lambda: _waiting(host, instance_id))
    host.suspend(instance_id)
    host.raise_event(instance_id, "step", "held")
    host.run_until_idle()
    assert host.get_status(instance_id).runtime_status == "Suspended"
    host.resume(instance_id)
    assert host.wait_for(instance_id).output == ['"held"']


@pytest.mark.parametrize("schema", ["v1", "v2"])
def test_older_replay_schemas(schema: str, token: str) -> None:
    with LocalHost(FEATURES, schema=schema) as host:  # type: ignore[arg-type]
        assert host.wait_for(host.start_new("chain", ["a", "b"])).output == ["Hello a!", "Hello b!"]
        assert host.wait_for(host.start_new("fan_out", 5)).output == 30
        retried = host.start_new("retrying", {"token": token, "fail_times": 1, "interval_ms": 500})
        assert host.wait_for(retried).output == "succeeded on attempt 2"
        sleeper = host.start_new("sleeper", 10)
        assert host.wait_for(sleeper).output == 864000.0
        timers = [e for e in host.history(sleeper) if e["EventType"] == EventType.TIMER_CREATED]
        assert len(timers) == 1  # only schema V3 splits long timers
        assert host.check_replay(retried).ok


def test_real_clock_wait_for_rides_out_a_pending_timer() -> None:
    from localdev.clock import RealClock

    with LocalHost(FEATURES, clock=RealClock()) as host:
        instance_id = host.start_new("sleeper", 0.00001)  # ~0.9 s of real time: a timer is pending meanwhile
        assert host.wait_for(instance_id).runtime_status == "Completed"
        waiting = host.start_new("collector", 1)
        with pytest.raises(HostIdleError):  # nothing left that could ever move it on
            host.wait_for(waiting)
