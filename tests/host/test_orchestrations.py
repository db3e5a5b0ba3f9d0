"""Orchestration semantics driven through the real SDK: activities, fan-out, retries, sub-orchestrations,
continue-as-new, failures, custom status, non-determinism."""

from __future__ import annotations

import json

from localdev.host import LocalHost
from localdev.host.history import EventType
from tests.host.apps import features


def _events(host: LocalHost, instance_id: str, kind: EventType) -> list[dict]:
    return [e for e in host.history(instance_id) if e["EventType"] == kind]


def test_activity_chain_completes_with_outputs_and_replays(host: LocalHost) -> None:
    instance_id = host.start_new("chain", ["Tokyo", "Seattle"])
    status = host.wait_for(instance_id)
    assert status.runtime_status == "Completed"
    assert status.output == ["Hello Tokyo!", "Hello Seattle!"]
    # The Python client double-encodes inputs: the status input is the JSON text (as in Azure).
    assert json.loads(status.input) == ["Tokyo", "Seattle"]
    scheduled = _events(host, instance_id, EventType.TASK_SCHEDULED)
    assert [(e["EventId"], e["Name"]) for e in scheduled] == [(0, "hello"), (1, "hello")]
    assert host.check_replay(instance_id).ok


def test_history_has_episode_boundaries_and_version(host: LocalHost) -> None:
    instance_id = host.start_new("chain", ["A"], version="1.2")
    host.wait_for(instance_id)
    kinds = [e["EventType"] for e in host.history(instance_id)]
    assert kinds == [12, 0, 4, 13, 12, 5, 1, 13]
    started = host.history(instance_id)[1]
    assert started["Version"] == "1.2"
    assert started["OrchestrationInstance"]["InstanceId"] == instance_id


def test_fan_out_of_100_activities(host: LocalHost) -> None:
    instance_id = host.start_new("fan_out", 100)
    status = host.wait_for(instance_id)
    assert status.output == sum(i * i for i in range(100))
    scheduled = _events(host, instance_id, EventType.TASK_SCHEDULED)
    assert sorted(e["EventId"] for e in scheduled) == list(range(100))
    assert len(host.activity_calls("square")) == 100
    assert host.check_replay(instance_id).ok


def test_nested_compound_when_all_inside_when_any(host: LocalHost) -> None:
    instance_id = host.start_new("nested")
    status = host.wait_for(instance_id)
    assert status.output == ["Hello x!", "Slowly, hello y!"]
    when_any = host.replay(host.history(instance_id)).sdk_state["actions"][0][0]
    assert when_any["actionType"] == 11
    inner, timer = when_any["compoundActions"]
    assert (inner["actionType"], [a["actionType"] for a in inner["compoundActions"]]) == (12, [0, 0])
    assert (timer["actionType"], timer["isCanceled"]) == (5, True)
    scheduled = [(e["EventType"], e["EventId"]) for e in host.history(instance_id) if e["EventType"] in (4, 10)]
    assert scheduled == [(4, 0), (4, 1), (10, 2)]


def test_retry_succeeds_on_third_attempt_with_dtfx_layout(host: LocalHost, token: str) -> None:
    instance_id = host.start_new("retrying", {"token": token, "fail_times": 2, "interval_ms": 60_000})
    status = host.wait_for(instance_id)
    assert status.output == "succeeded on attempt 3"
    layout = [
        (e["EventType"], e.get("EventId"), e.get("TaskScheduledId", e.get("TimerId")))
        for e in host.history(instance_id)
        if e["EventType"] in (4, 5, 6, 10, 11)
    ]
    assert layout == [
        (4, 0, None), (6, -1, 0), (10, 1, None), (11, -1, 1),
        (4, 2, None), (6, -1, 2), (10, 3, None), (11, -1, 3),
        (4, 4, None), (5, -1, 4),
    ]  # fmt: skip
    timers = _events(host, instance_id, EventType.TIMER_CREATED)
    failures = _events(host, instance_id, EventType.TASK_FAILED)
    for timer, failure in zip(timers, failures, strict=True):
        # fireAt = the replay-time CurrentUtcDateTime of the failure + the retry interval
        delta = _seconds(timer["FireAt"]) - _seconds(failure["Timestamp"])
        assert 59.9 < delta <= 60.0
    assert host.check_replay(instance_id).ok


def test_retry_fails_after_last_attempt_and_one_extra_timer(host: LocalHost, token: str) -> None:
    instance_id = host.start_new("retrying", {"token": token, "fail_times": 5, "interval_ms": 1000})
    status = host.wait_for(instance_id)
    assert status.runtime_status == "Failed"
    assert status.output.startswith("Orchestrator function 'retrying' failed: Activity function 'flaky' failed: ")
    assert "RuntimeError: attempt 3 failed" in status.output
    kinds = [e["EventType"] for e in host.history(instance_id) if e["EventType"] in (4, 6, 10, 11)]
    # three attempts, a timer after each failure - the last one too - before the error surfaces
    assert kinds == [4, 6, 10, 11, 4, 6, 10, 11, 4, 6, 10, 11]
    assert len(host.activity_calls("flaky")) == 3
    assert host.check_replay(instance_id).ok


def test_sub_orchestrations_explicit_derived_failed_and_retried(host: LocalHost, token: str) -> None:
    instance_id = host.start_new("parent", token)
    status = host.wait_for(instance_id)
    assert status.runtime_status == "Completed", status.output
    output = status.output
    execution_id = host.history(instance_id)[1]["OrchestrationInstance"]["ExecutionId"]
    assert output["explicit"] == {"value": 1, "parent": instance_id, "instance": f"{instance_id}-explicit"}
    assert output["derived"] == {"value": 4, "parent": instance_id, "instance": f"{execution_id}:1"}
    assert output["failure"].startswith("Orchestrator function 'failing' failed: boom")
    assert output["retried"] == "succeeded on attempt 2"
    created = _events(host, instance_id, EventType.SUB_ORCHESTRATION_CREATED)
    assert [e["InstanceId"] for e in created[:2]] == [f"{instance_id}-explicit", f"{execution_id}:1"]
    retried_ids = [e["InstanceId"] for e in created[3:]]
    assert retried_ids == [f"{execution_id}:3", f"{execution_id}:5"]  # each attempt is a new sub-orchestration
    child = host.get_status(f"{instance_id}-explicit")
    assert child is not None and child.runtime_status == "Completed"
    assert host.check_replay(instance_id).ok


def test_continue_as_new_restarts_with_fresh_history(host: LocalHost) -> None:
    instance_id = host.start_new("counter", 0)
    status = host.wait_for(instance_id)
    assert status.runtime_status == "Completed"
    assert status.output == 3
    history = host.history(instance_id)
    assert history[1]["EventType"] == EventType.EXECUTION_STARTED
    assert json.loads(json.loads(history[1]["Input"])) == 3  # only the last generation remains
    assert [c.input for c in host.activity_calls("hello")] == [json.dumps(f"generation {n}") for n in range(3)]
    assert status.custom_status == {"generation": 2}


def test_orchestrator_exception_fails_with_extension_error_text(host: LocalHost) -> None:
    instance_id = host.start_new("failing")
    status = host.wait_for(instance_id)
    assert status.runtime_status == "Failed"
    assert status.output == "Orchestrator function 'failing' failed: boom"
    assert status.failure_details is not None and status.failure_details.startswith("Message: boom, StackTrace:")
    completed = _events(host, instance_id, EventType.EXECUTION_COMPLETED)
    assert completed[0]["OrchestrationStatus"] == 3
    assert any("failing" in e.message and e.level == "ERROR" for e in host.logs())


def test_activity_failure_reason_and_details(host: LocalHost) -> None:
    instance_id = host.start_new("catcher", "payload")
    status = host.wait_for(instance_id)
    failed = _events(host, instance_id, EventType.TASK_FAILED)[0]
    assert failed["Reason"].startswith(
        "Activity function 'explode' failed: Result: Failure\nException: ValueError: kaboom payload\nStack: "
    )
    details = json.loads(failed["Details"])
    assert details["Message"].startswith("Result: Failure\nException: ValueError: kaboom payload")
    # the SDK surfaces f"{Reason} \n {Details}" as a plain Exception
    assert status.output == f"{failed['Reason']} \n {failed['Details']}"


def test_custom_status_is_stored_and_limited_to_16_kb(host: LocalHost) -> None:
    small = host.wait_for(host.start_new("status_setter", 8000))
    assert small.runtime_status == "Completed"
    assert small.custom_status == "x" * 8000
    large = host.wait_for(host.start_new("status_setter", 9000))
    assert large.runtime_status == "Failed"
    assert large.output == (
        "Orchestrator function 'status_setter' failed: The UTF-16 size of the JSON-serialized payload must not "
        "exceed 16 KB. The current payload size is 17.58 KB."
    )


def test_code_change_after_start_is_non_deterministic(host: LocalHost) -> None:
    features.VARIANT["activity"] = "hello"
    try:
        with host.hold_clock():
            instance_id = host.start_new("changing")
            host.wait_until(lambda: host.engine.is_idle(include_timers=False))
        assert host.get_status(instance_id).runtime_status == "Running"
        features.VARIANT["activity"] = "square"  # the "deployment" changes the first activity
        host.raise_event(instance_id, "go")
        status = host.wait_for(instance_id)
    finally:
        features.VARIANT["activity"] = "hello"
    assert status.runtime_status == "Failed"
    assert status.output == (
        "Non-Deterministic workflow detected: A previous execution of this orchestration scheduled an activity "
        "task with sequence number 0 named 'hello', but the current orchestration replay instead scheduled an "
        "activity task named 'square' with this sequence number.  Was a change made to the orchestrator code "
        "after this instance had already started running?"
    )


def test_entity_actions_fail_loudly(host: LocalHost) -> None:
    status = host.wait_for(host.start_new("entity_user"))
    assert status.runtime_status == "Failed"
    assert "does not support SignalEntity (durable entities)" in status.output


def test_unknown_activity_fails_with_extension_message(host: LocalHost) -> None:
    status = host.wait_for(host.start_new("calls_missing"))
    assert status.output.startswith(
        "Orchestrator function 'calls_missing' failed: The function 'no_such_activity' doesn't exist, is disabled, "
        "or is not an activity function. Additional info: The following are the active activity functions: "
    )


def test_context_parameter_must_be_named_context(host: LocalHost) -> None:
    status = host.wait_for(host.start_new("wrong_context_name"))
    assert status.runtime_status == "Failed"
    assert "unexpected keyword argument 'ctx'" in status.output


def test_sync_activities_run_concurrently_in_threads(host: LocalHost, token: str) -> None:
    status = host.wait_for(host.start_new("gates", {"token": token, "parties": 6, "async": False}))
    assert status.output == list(range(6))


def test_async_activities_run_concurrently_on_the_loop(host: LocalHost, token: str) -> None:
    status = host.wait_for(host.start_new("gates", {"token": token, "parties": 6, "async": True}))
    assert status.output == list(range(6))


def test_sdk_quirk_task_all_of_nothing_yields_none(host: LocalHost) -> None:
    # WhenAllTask with no children succeeds at once with result None, not [] (SDK 1.7 behaviour).
    status = host.wait_for(host.start_new("fan_out", 0))
    assert status.runtime_status == "Failed"
    assert status.output == "Orchestrator function 'fan_out' failed: 'NoneType' object is not iterable"


def test_mocked_activity_goes_through_converters(host: LocalHost) -> None:
    host.mock_activity("square", lambda value: {"mocked": value})
    instance_id = host.start_new("child", 7)
    assert host.wait_for(instance_id).output["value"] == {"mocked": 7}
    host.mock_activity("square", None)
    assert host.wait_for(host.start_new("child", 3)).output["value"] == 9


def test_unknown_orchestrator_is_rejected(host: LocalHost) -> None:
    try:
        host.start_new("nope")
    except ValueError as exc:
        assert "The function 'nope' doesn't exist" in str(exc)
    else:
        raise AssertionError("starting an unknown orchestrator must fail")
    assert host.instances() == []


def _seconds(text: str) -> float:
    from localdev.host.timefmt import parse_ticks, seconds_from_ticks

    return seconds_from_ticks(parse_ticks(text))
