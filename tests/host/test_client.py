"""The real ``DurableOrchestrationClient`` against the host's extension routes, method by method."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import azure.functions as func
import pytest
from azure.durable_functions import DurableOrchestrationClient, EntityId, OrchestrationRuntimeStatus

from localdev.host import LocalHost


def test_start_new_and_get_status(host: LocalHost) -> None:
    instance_id = host.run_client(lambda c: c.start_new("chain", client_input=["Ada"]))
    host.wait_for(instance_id)
    status = host.run_client(lambda c: c.get_status(instance_id, show_history=True, show_history_output=True))
    assert status.runtime_status == OrchestrationRuntimeStatus.Completed
    assert status.output == ["Hello Ada!"]
    assert json.loads(status.input_) == ["Ada"]
    events = status.historyEvents  # the extension's condensed history, kept by the SDK as a kwarg
    assert [e["EventType"] for e in events] == ["ExecutionStarted", "TaskCompleted", "ExecutionCompleted"]
    assert events[1]["FunctionName"] == "hello" and events[1]["Result"] == "Hello Ada!"
    hidden = host.run_client(lambda c: c.get_status(instance_id, show_input=False))
    assert hidden.input_ is not None  # showInput=False is never sent by the SDK (falsy values are dropped)
    missing = host.run_client(lambda c: c.get_status("no-such-instance"))
    assert not missing


def test_start_new_with_id_version_and_unknown_orchestrator(host: LocalHost) -> None:
    instance_id = host.run_client(lambda c: c.start_new("chain", "fixed-id", ["x"], version="2.0"))
    assert instance_id == "fixed-id"
    host.wait_for(instance_id)
    assert host.history(instance_id)[1]["Version"] == "2.0"
    with pytest.raises(Exception, match="The function 'nope' doesn't exist"):
        host.run_client(lambda c: c.start_new("nope"))


def test_get_status_all_and_by_filters(host: LocalHost) -> None:
    done = [host.start_new("chain", ["a"], instance_id=f"batch-{i}") for i in range(3)]
    for instance_id in done:
        host.wait_for(instance_id)
    waiting = host.start_new("collector", 1, instance_id="other-1")
    host.run_until_idle()
    everything = host.run_client(lambda c: c.get_status_all())
    assert {s.instance_id for s in everything} == {*done, waiting}
    completed = host.run_client(lambda c: c.get_status_by(runtime_status=[OrchestrationRuntimeStatus.Completed]))
    assert {s.instance_id for s in completed} == set(done)
    prefixed = host.run_client(lambda c: c.get_status_by(instance_id_prefix="other-"))
    assert [s.instance_id for s in prefixed] == [waiting]
    now = datetime.fromtimestamp(host.clock.time(), tz=UTC)
    recent = host.run_client(
        lambda c: c.get_status_by(created_time_from=now - timedelta(minutes=5), created_time_to=now + timedelta(1))
    )
    assert len(recent) == 4
    future = host.run_client(lambda c: c.get_status_by(created_time_from=now + timedelta(days=2)))
    assert future == []


def test_list_pages_with_continuation_token(host: LocalHost) -> None:
    for i in range(5):
        host.wait_for(host.start_new("chain", ["p"], instance_id=f"page-{i}"))
    seen: list[str] = []
    token = ""
    while True:
        headers = {"x-ms-continuation-token": token} if token else {}
        page = host.invoke_http("GET", "/durabletask/instances/", headers=headers, query={"top": "2"})
        assert page.status == 200
        seen += [s["instanceId"] for s in page.json()]
        token = page.headers.get("x-ms-continuation-token", "")
        if not token:
            break
    assert seen == [f"page-{i}" for i in range(5)]
    bad = host.invoke_http("GET", "/durabletask/instances/", headers={"x-ms-continuation-token": "garbage"})
    assert bad.status == 400


def test_raise_event_terminate_and_their_errors(host: LocalHost) -> None:
    waiting = host.start_new("collector", 1)
    host.run_until_idle()
    host.run_client(lambda c: c.raise_event(waiting, "step", {"n": 1}))
    assert host.wait_for(waiting).output == ['{"n": 1}']
    with pytest.raises(Exception, match="is gone"):
        host.run_client(lambda c: c.raise_event(waiting, "step", 2))
    with pytest.raises(Exception, match="No instance with ID nobody found"):
        host.run_client(lambda c: c.raise_event("nobody", "step", 2))
    victim = host.start_new("collector", 1)
    host.run_until_idle()
    host.run_client(lambda c: c.terminate(victim, "stop it"))
    status = host.wait_for(victim)
    assert (status.runtime_status, status.output) == ("Terminated", "stop it")
    host.run_client(lambda c: c.terminate(victim, "again"))  # 410 Gone is accepted by the client
    with pytest.raises(Exception, match="No instance with ID 'nobody' found"):
        host.run_client(lambda c: c.terminate("nobody", "x"))


def test_suspend_resume_restart_and_rewind(host: LocalHost) -> None:
    waiting = host.start_new("collector", 1)
    host.run_until_idle()
    host.run_client(lambda c: c.suspend(waiting, "pause"))
    assert host.get_status(waiting).runtime_status == "Suspended"
    host.run_client(lambda c: c.raise_event(waiting, "step", "x"))
    host.run_until_idle()
    host.run_client(lambda c: c.resume(waiting, "go on"))
    assert host.wait_for(waiting).runtime_status == "Completed"
    restarted = host.run_client(lambda c: c.restart(waiting, restart_with_new_instance_id=True))
    new_id = restarted["id"] if isinstance(restarted, dict) else restarted  # the SDK returns the 202 body
    assert new_id != waiting
    assert host.get_status(new_id).input == host.get_status(waiting).input
    failed = host.start_new("failing")
    host.wait_for(failed)
    with pytest.raises(Exception, match="Rewind is not supported"):
        host.run_client(lambda c: c.rewind(failed, "retry"))


def test_purge_instance_history_and_by(host: LocalHost) -> None:
    done = host.start_new("chain", ["x"])
    host.wait_for(done)
    assert host.run_client(lambda c: c.purge_instance_history(done)).instances_deleted == 1
    assert host.get_status(done) is None
    assert host.run_client(lambda c: c.purge_instance_history("nobody")).instances_deleted == 0
    running = host.start_new("collector", 1)
    host.run_until_idle()
    with pytest.raises(Exception, match="412"):
        host.run_client(lambda c: c.purge_instance_history(running))
    for i in range(3):
        host.wait_for(host.start_new("chain", ["y"], instance_id=f"old-{i}"))
    start = datetime.fromtimestamp(host.clock.time(), tz=UTC) - timedelta(hours=1)
    result = host.run_client(
        lambda c: c.purge_instance_history_by(
            created_time_from=start, runtime_status=[OrchestrationRuntimeStatus.Completed]
        )
    )
    assert result.instances_deleted == 3
    assert [s.instance_id for s in host.instances()] == [running]


def test_check_status_response_and_management_payload(host: LocalHost) -> None:
    instance_id = host.start_new("chain", ["z"])
    request = func.HttpRequest("POST", "http://example.test:8080/api/start", body=b"", headers={}, params={})
    client: DurableOrchestrationClient = host.client()
    response = client.create_check_status_response(request, instance_id)
    assert response.status_code == 202
    payload = json.loads(response.get_body())
    assert payload["id"] == instance_id
    assert payload["statusQueryGetUri"].startswith(
        f"http://example.test:8080/runtime/webhooks/durabletask/instances/{instance_id}?taskHub=TestHubName"
    )
    assert response.headers["Location"] == payload["statusQueryGetUri"]
    links = client.create_http_management_payload(instance_id)
    assert urlsplit(links["statusQueryGetUri"]).netloc == urlsplit(host.base_url).netloc
    host.wait_for(instance_id)
    polled = host.invoke_http("GET", urlsplit(links["statusQueryGetUri"]).path)
    assert polled.status == 200 and polled.json()["output"] == ["Hello z!"]
    request = func.HttpRequest("GET", f"{host.base_url}/api/x", body=b"", headers={}, params={})
    waited = host.run_client(lambda c: c.wait_for_completion_or_create_check_status_response(request, instance_id))
    assert waited.status_code == 200 and json.loads(waited.get_body()) == ["Hello z!"]


def test_http_starter_uses_client_binding_and_status_urls(host: LocalHost) -> None:
    started = host.invoke_http("POST", "/api/orchestrators/chain", ["Grace"])
    assert started.status == 202
    body = started.json()
    assert started.headers["Location"] == body["statusQueryGetUri"]
    pending = host.invoke_http("GET", urlsplit(body["statusQueryGetUri"]).path)
    assert pending.status in (200, 202)
    host.wait_for(body["id"])
    final = host.invoke_http(
        "GET", urlsplit(body["statusQueryGetUri"]).path + "?" + urlsplit(body["statusQueryGetUri"]).query
    )
    assert final.status == 200
    assert final.json()["runtimeStatus"] == "Completed" and final.json()["output"] == ["Hello Grace!"]


def test_entities_are_reported_as_unsupported(host: LocalHost) -> None:
    with pytest.raises(Exception, match="unexpected status code 501"):
        host.run_client(lambda c: c.signal_entity(EntityId("counter", "a"), "add", 1))
    with pytest.raises(Exception, match="unexpected status code 501"):
        host.run_client(lambda c: c.read_entity_state(EntityId("counter", "a")))
