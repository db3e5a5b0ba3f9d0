"""The app's HTTP routes, function keys, the Event Grid webhook, timer triggers and the admin routes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from localdev.host import LocalHost
from tests.host.apps import features
from tests.host.conftest import FEATURES


def _grid_event(subject: str, **data: object) -> dict[str, object]:
    return {
        "id": str(uuid.uuid4()),
        "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm",
        "subject": subject,
        "eventType": "Microsoft.Resources.ResourceWriteSuccess",
        "eventTime": datetime.now(UTC).isoformat(),
        "data": dict(data),
        "dataVersion": "1",
    }


def test_app_routes_params_methods_and_errors(host: LocalHost) -> None:
    hello = host.invoke_http("GET", "/api/hello", query={"name": "Lin"})
    assert (hello.status, hello.text) == (200, "Hello Lin")
    assert hello.headers["Content-Type"].startswith("text/plain")
    item = host.invoke_http("PUT", "/api/items/42/a/b", {"size": 3})
    assert item.status == 200 and item.headers["X-Item"] == "yes"
    assert item.json() == {"id": "42", "rest": "a/b", "method": "PUT", "body": {"size": 3}}
    assert host.invoke_http("GET", "/api/items/not-a-number").status == 404  # {id:int} constraint
    assert host.invoke_http("DELETE", "/api/items/1").status == 404  # method not allowed -> no route
    broken = host.invoke_http("GET", "/api/broken")
    assert broken.status == 500
    assert any(e.exc_text and "the HTTP function broke" in e.exc_text for e in host.logs(function="http_broken"))
    assert host.invoke_http("GET", "/api/hello").status == 200  # the host keeps serving


def test_function_key_is_required_when_configured() -> None:
    with LocalHost(FEATURES, function_key="s3cret") as host:
        assert host.invoke_http("PUT", "/api/items/1", {}).status == 401
        assert host.invoke_http("PUT", "/api/items/1", {}, query={"code": "wrong"}).status == 401
        assert host.invoke_http("PUT", "/api/items/1", {}, query={"code": "s3cret"}).status == 200
        assert host.invoke_http("PUT", "/api/items/1", {}, headers={"x-functions-key": "s3cret"}).status == 200
        assert host.invoke_http("GET", "/api/hello").status == 200  # anonymous route
        assert host.invoke_http("GET", "/admin/clock").status == 401
        started = host.invoke_http("POST", "/api/orchestrators/chain", ["k"], query={"code": "s3cret"}).json()
        assert "code=s3cret" in started["statusQueryGetUri"]  # management URLs carry the key
        host.wait_for(started["id"])


def test_any_key_is_accepted_without_configuration(host: LocalHost) -> None:
    assert host.invoke_http("PUT", "/api/items/1", {}, query={"code": "anything"}).status == 200
    assert host.invoke_http("PUT", "/api/items/1", {}).status == 200


def test_event_grid_schema_one_invocation_per_event(host: LocalHost) -> None:
    events = [_grid_event("/vm/one", n=1), _grid_event("/vm/two", n=2)]
    reply = host.deliver_event_grid("on_vm_event", events)
    assert reply.status == 202
    for event in events:
        assert host.wait_for(f"eg-{event['id']}").output == [f"Hello {event['subject']}!"]
    mine = [r for r in features.RECEIVED if r["id"] in {e["id"] for e in events}]
    assert sorted(r["data"]["n"] for r in mine) == [1, 2]
    assert {r["type"] for r in mine} == {"Microsoft.Resources.ResourceWriteSuccess"}


def test_cloud_events_schema_and_handshakes(host: LocalHost) -> None:
    event_id = str(uuid.uuid4())
    cloud = {"specversion": "1.0", "id": event_id, "source": "/twin", "type": "vm.created", "data": {"a": 1}}
    assert host.deliver_event_grid("on_cloud_event", cloud).status == 202
    assert {"id": event_id, "type": "vm.created", "source": "/twin", "kind": "CloudEvent"} in features.RECEIVED
    code = uuid.uuid4().hex
    validation = host.validate_event_grid("on_vm_event", code)
    assert validation.status == 200 and validation.json() == {"validationResponse": code}
    options = host.invoke_http(
        "OPTIONS",
        "/runtime/webhooks/eventgrid",
        headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
        query={"functionName": "on_cloud_event"},
    )
    assert options.status == 200 and options.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert host.deliver_event_grid("no_such_function", cloud).status == 404
    not_json = host.invoke_http("POST", "/runtime/webhooks/eventgrid?functionName=on_cloud_event", b"{oops")
    assert not_json.status == 400


def test_event_grid_function_exception_is_logged_and_answered_500(host: LocalHost) -> None:
    good, bad = _grid_event("/ok"), _grid_event("/bad", explode=True)
    reply = host.deliver_event_grid("on_bad_event", [good, bad])
    assert reply.status == 500
    assert "KeyError" in reply.text and bad["id"] in reply.text
    assert {"id": good["id"], "type": good["eventType"]} in features.RECEIVED  # the other event still ran
    errors = host.logs(level="ERROR", function="on_bad_event")
    assert errors and "cannot handle" in (errors[0].exc_text or "")
    assert host.deliver_event_grid("on_bad_event", [_grid_event("/fine")]).status == 202


def test_timer_trigger_on_request_and_on_schedule() -> None:
    before = len(features.TICKS)
    with LocalHost(FEATURES) as host:
        assert host.trigger_timer("tick").status == 202
        assert len(features.TICKS) == before + 1
        assert host.trigger_timer("hello").status == 400  # activities cannot be run on request
    with LocalHost(FEATURES, timer_triggers=True) as host:
        start = host.clock.time()
        host.run_until_idle(until=lambda: len(features.TICKS) >= before + 3)
        fired = features.TICKS[before + 1 : before + 3]
        assert all(t["past_due"] is False for t in fired)
        assert fired[1]["status"]["Last"] is not None
        assert host.clock.time() - start >= 300  # NCRONTAB every 5 minutes, on the virtual clock


def test_admin_routes(host: LocalHost) -> None:
    instance_id = host.start_new("chain", ["admin"])
    host.wait_for(instance_id)
    clock = host.invoke_http("GET", "/admin/clock").json()
    assert clock["kind"] == "virtual"
    advanced = host.invoke_http("POST", "/admin/clock/advance", {"seconds": 3600}).json()
    assert advanced["epoch"] - clock["epoch"] >= 3600
    assert host.invoke_http("POST", "/admin/clock/advance", {"seconds": -1}).status == 400
    listed = host.invoke_http("GET", "/admin/instances").json()
    assert [(i["instanceId"], i["runtimeStatus"]) for i in listed] == [(instance_id, "Completed")]
    functions = {f["name"]: f for f in host.invoke_http("GET", "/admin/functions").json()}
    assert functions["http_item"]["route"] == "items/{id:int}/{*rest}"
    assert functions["tick"]["schedule"] == "0 */5 * * * *"
    assert host.invoke_http("GET", "/admin/host/status").json()["state"] == "Running"
