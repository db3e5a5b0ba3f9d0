"""A sample v2-model Durable app exercising every host feature (test-only code, not production)."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

# Module state the tests inspect; keyed by a per-test token so parallel tests never share entries.
ATTEMPTS: dict[str, int] = {}
BARRIERS: dict[str, threading.Barrier] = {}
ASYNC_GATES: dict[str, dict[str, Any]] = {}
RECEIVED: list[dict[str, Any]] = []
TICKS: list[dict[str, Any]] = []
VARIANT = {"activity": "hello"}
_LOCK = threading.Lock()


# --- orchestrators ----------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext):
    names = context.get_input() or ["Tokyo", "Seattle", "London"]
    results = []
    for name in names:
        results.append((yield context.call_activity("hello", name)))
    return results


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    count = context.get_input()
    results = yield context.task_all([context.call_activity("square", i) for i in range(count)])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=spec["interval_ms"], max_number_of_attempts=3)
    return (yield context.call_activity_with_retry("flaky", options, spec))


@app.orchestration_trigger(context_name="context")
def race(context: df.DurableOrchestrationContext):
    deadline = context.create_timer(context.current_utc_datetime + timedelta(days=1))
    approval = context.wait_for_external_event("approval")
    winner = yield context.task_any([deadline, approval])
    if winner == approval:
        deadline.cancel()
        return {"result": "approved", "data": approval.result}
    return {"result": "timed out"}


@app.orchestration_trigger(context_name="context")
def sleeper(context: df.DurableOrchestrationContext):
    days = context.get_input()
    start = context.current_utc_datetime
    yield context.create_timer(start + timedelta(days=days))
    return (context.current_utc_datetime - start).total_seconds()


@app.orchestration_trigger(context_name="context")
def counter(context: df.DurableOrchestrationContext):
    n = context.get_input()
    if n < 3:
        yield context.call_activity("hello", f"generation {n}")
        context.set_custom_status({"generation": n})
        context.continue_as_new(n + 1)
        return None
    return n


@app.orchestration_trigger(context_name="context")
def collector(context: df.DurableOrchestrationContext):
    received = []
    for _ in range(context.get_input()):
        received.append((yield context.wait_for_external_event("step")))
    return received


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    token = context.get_input()
    explicit = yield context.call_sub_orchestrator("child", 1, instance_id=f"{context.instance_id}-explicit")
    derived = yield context.call_sub_orchestrator("child", 2)
    try:
        yield context.call_sub_orchestrator("failing", None)
        failure = None
    except Exception as exc:
        failure = str(exc)
    options = df.RetryOptions(1000, 2)
    retried = yield context.call_sub_orchestrator_with_retry("flaky_child", options, {"token": token, "fail_times": 1})
    return {"explicit": explicit, "derived": derived, "failure": failure, "retried": retried}


@app.orchestration_trigger(context_name="context")
def child(context: df.DurableOrchestrationContext):
    value = context.get_input()
    doubled = yield context.call_activity("square", value)
    return {"value": doubled, "parent": context.parent_instance_id, "instance": context.instance_id}


@app.orchestration_trigger(context_name="context")
def flaky_child(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("flaky", context.get_input()))


@app.orchestration_trigger(context_name="context")
def failing(context: df.DurableOrchestrationContext):
    yield context.call_activity("hello", "before the failure")
    raise ValueError("boom")


@app.orchestration_trigger(context_name="context")
def catcher(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("explode", context.get_input())
    except Exception as exc:
        return str(exc)
    return "no failure"


@app.orchestration_trigger(context_name="context")
def status_setter(context: df.DurableOrchestrationContext):
    size = context.get_input()
    context.set_custom_status("x" * size)
    yield context.call_activity("hello", "status")
    return size


@app.orchestration_trigger(context_name="context")
def changing(context: df.DurableOrchestrationContext):
    first = yield context.call_activity(VARIANT["activity"], "first")
    yield context.wait_for_external_event("go")
    return first


@app.orchestration_trigger(context_name="context")
def entity_user(context: df.DurableOrchestrationContext):
    context.signal_entity(df.EntityId("counter_entity", "k"), "add", 1)
    return (yield context.call_activity("hello", "after signal"))


@app.orchestration_trigger(context_name="context")
def calls_missing(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("no_such_activity", 1))


@app.orchestration_trigger(context_name="context")
def gates(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    name = "gate_async" if spec["async"] else "gate_sync"
    return (yield context.task_all([context.call_activity(name, {**spec, "index": i}) for i in range(spec["parties"])]))


@app.orchestration_trigger(context_name="context")
def replay_safe(context: df.DurableOrchestrationContext):
    ids = [context.new_uuid(), context.new_uuid()]
    winner = yield context.task_any([context.call_activity("hello", "a"), context.call_activity("slow_hello", "b")])
    yield context.create_timer(context.current_utc_datetime + timedelta(minutes=5))
    context.set_custom_status({"ids": ids})
    return {"ids": ids, "winner": winner.result, "at": context.current_utc_datetime.isoformat()}


@app.orchestration_trigger(context_name="context")
def nested(context: df.DurableOrchestrationContext):
    both = context.task_all([context.call_activity("hello", "x"), context.call_activity("slow_hello", "y")])
    deadline = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    winner = yield context.task_any([both, deadline])
    if winner == both:
        deadline.cancel()
        return winner.result
    return "timed out"


@app.orchestration_trigger(context_name="ctx")
def wrong_context_name(ctx: df.DurableOrchestrationContext):
    yield ctx.call_activity("hello", "never")


# --- activities -----------------------------------------------------------------------------------
@app.activity_trigger(input_name="name")
def hello(name: str) -> str:
    return f"Hello {name}!"


@app.activity_trigger(input_name="name")
async def slow_hello(name: str) -> str:
    await asyncio.sleep(0.05)
    return f"Slowly, hello {name}!"


@app.activity_trigger(input_name="value")
def square(value: int) -> int:
    return value * value


@app.activity_trigger(input_name="spec")
def flaky(spec: dict) -> str:
    key = spec.get("key") or spec["token"]
    with _LOCK:
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        attempt = ATTEMPTS[key]
    if attempt <= spec["fail_times"]:
        raise RuntimeError(f"attempt {attempt} failed")
    return f"succeeded on attempt {attempt}"


@app.activity_trigger(input_name="payload")
def explode(payload: str) -> str:
    raise ValueError(f"kaboom {payload}")


@app.activity_trigger(input_name="spec")
def gate_sync(spec: dict) -> int:
    with _LOCK:
        barrier = BARRIERS.setdefault(spec["token"], threading.Barrier(spec["parties"], timeout=20))
    barrier.wait()  # only passes if every party runs at the same time
    return spec["index"]


@app.activity_trigger(input_name="spec")
async def gate_async(spec: dict) -> int:
    gate = ASYNC_GATES.setdefault(spec["token"], {"arrived": 0, "open": asyncio.Event()})
    gate["arrived"] += 1
    if gate["arrived"] == spec["parties"]:
        gate["open"].set()
    await asyncio.wait_for(gate["open"].wait(), 20)
    return spec["index"]


# --- HTTP, Event Grid and timer triggers ----------------------------------------------------------------
@app.route(route="orchestrators/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def http_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    instance_id = await client.start_new(req.route_params["name"], client_input=json.loads(body) if body else None)
    return client.create_check_status_response(req, instance_id)


@app.route(route="hello", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def http_hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"Hello {req.params.get('name', 'world')}", mimetype="text/plain")


@app.route(route="items/{id:int}/{*rest}", methods=["GET", "PUT"])
async def http_item(req: func.HttpRequest) -> func.HttpResponse:
    payload = {"id": req.route_params.get("id"), "rest": req.route_params.get("rest"), "method": req.method}
    if req.method == "PUT":
        payload["body"] = req.get_json()
    return func.HttpResponse(json.dumps(payload), mimetype="application/json", headers={"X-Item": "yes"})


@app.route(route="broken", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def http_broken(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the HTTP function broke")


@app.event_grid_trigger(arg_name="event")
@app.durable_client_input(client_name="client")
async def on_vm_event(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    RECEIVED.append({"id": event.id, "type": event.event_type, "subject": event.subject, "data": event.get_json()})
    await client.start_new("chain", instance_id=f"eg-{event.id}", client_input=[event.subject])


@app.event_grid_trigger(arg_name="event")
def on_cloud_event(event: func.CloudEvent) -> None:
    RECEIVED.append({"id": event.id, "type": event.type, "source": event.source, "kind": type(event).__name__})


@app.event_grid_trigger(arg_name="event")
def on_bad_event(event: func.EventGridEvent) -> None:
    if (event.get_json() or {}).get("explode"):
        raise KeyError(f"cannot handle {event.id}")
    RECEIVED.append({"id": event.id, "type": event.event_type})


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False)
def tick(timer: func.TimerRequest) -> None:
    TICKS.append({"past_due": timer.past_due, "status": timer.schedule_status})
