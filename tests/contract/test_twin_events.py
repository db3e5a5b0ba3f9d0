"""Event Grid: resource-event delivery to a webhook, and the topic endpoint for EventGridPublisherClient."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from azure.core.credentials import AzureKeyCredential, AzureSasCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent, generate_sas

from localdev.clock import VirtualClock
from localdev.twin.core import Twin
from localdev.twin.testing import (
    TwinCredential,
    Webhook,
    admin_client,
    authorization_client,
    compute_client,
    publisher_client,
    wait_for,
)

FAST = {"retry_delays": (0.05, 0.05, 0.1), "timeout_seconds": 5}


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook().start()
    yield hook
    hook.stop()


def delivered(twin: Twin, count: int, outcome: str = "delivered") -> list[dict]:
    return wait_for(lambda: (rows := [d for d in twin.events.deliveries if d["outcome"] == outcome])
                    and len(rows) >= count and rows)


def test_validation_handshake_then_real_shaped_write_event(twin: Twin, webhook: Webhook) -> None:
    twin.events.configure(url=webhook.url, **FAST)
    vm = twin.create_vm("cvm-1")
    delivered(twin, 1)
    validation, notification = webhook.received[0], webhook.notifications()[0]
    assert validation.headers["aeg-event-type"] == "SubscriptionValidation"
    assert validation.body[0]["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
    assert notification.headers["aeg-delivery-count"] == "0"
    assert notification.headers["content-type"].startswith("application/json")
    [event] = notification.body
    assert event["eventType"] == "Microsoft.Resources.ResourceWriteSuccess"
    assert event["subject"] == vm.resource_id and event["topic"] == f"/subscriptions/{twin.config.subscription_id}"
    assert event["dataVersion"] == "2" and event["metadataVersion"] == "1"
    data = event["data"]
    assert data["operationName"] == "Microsoft.Compute/virtualMachines/write"
    assert data["resourceProvider"] == "Microsoft.Compute" and data["resourceUri"] == vm.resource_id
    assert data["status"] == "Succeeded" and data["tenantId"] == twin.config.tenant_id
    assert data["authorization"]["action"] == "Microsoft.Compute/virtualMachines/write"
    assert twin.events.validation["status"] == "validated"


def test_manual_validation_through_the_validation_url(twin: Twin) -> None:
    hook = Webhook(validation="manual", ca_bundle=twin.ca_bundle_path).start()
    try:
        twin.events.configure(url=hook.url, **FAST)
        twin.create_vm("cvm-2")
        delivered(twin, 1)
        assert twin.events.validation["detail"] == "validated through the validation URL"
    finally:
        hook.stop()


def test_refused_validation_blocks_delivery(twin: Twin) -> None:
    hook = Webhook(validation="refuse").start()
    try:
        twin.events.configure(url=hook.url, **FAST)
        twin.create_vm("cvm-3")
        [row] = delivered(twin, 1, "undeliverable")
        assert "validation failed" in row["detail"] and hook.notifications() == []
    finally:
        hook.stop()


def test_arm_writes_by_the_app_become_events(twin: Twin, webhook: Webhook) -> None:
    twin.events.configure(url=webhook.url, **FAST)
    vm = twin.create_vm("cvm-4", emit_event=False)
    client = authorization_client(twin)
    scope = f"{twin.vault().resource_id}/keys/k"
    name = str(uuid.uuid4())
    client.role_assignments.create(scope, name, {
        "role_definition_id": f"/subscriptions/{twin.config.subscription_id}/providers/Microsoft.Authorization/"
                              "roleDefinitions/08bbd89e-9f13-488c-ac41-acfcb10c90ab",
        "principal_id": vm.principal_id, "principal_type": "ServicePrincipal"})
    client.role_assignments.delete(scope, name)
    delivered(twin, 2)
    events = webhook.events()
    assert [e["data"]["operationName"] for e in events] == ["Microsoft.Authorization/roleAssignments/write",
                                                            "Microsoft.Authorization/roleAssignments/delete"]
    assert events[1]["eventType"] == "Microsoft.Resources.ResourceDeleteSuccess"
    claims = events[0]["data"]["claims"]
    assert claims["appid"] == twin.app_principal.app_id


def test_vm_delete_event_and_run_command_events_reported_by_other_modules(twin: Twin, webhook: Webhook) -> None:
    twin.events.configure(url=webhook.url, **FAST)
    vm = twin.create_vm("cvm-5", emit_event=False)
    command_id = f"{vm.resource_id}/runCommands/skr-release"
    twin.events.resource_event("Microsoft.Resources.ResourceWriteSuccess", command_id,
                               "Microsoft.Compute/virtualMachines/runCommands/write", twin.app_principal,
                               http_method="PUT", url="https://example/runCommands")
    compute_client(twin, twin.operator_principal.object_id).virtual_machines.begin_delete("cvm-rg", "cvm-5").result()
    delivered(twin, 2)
    assert [(e["subject"], e["eventType"]) for e in webhook.events()] == [
        (command_id, "Microsoft.Resources.ResourceWriteSuccess"),
        (vm.resource_id, "Microsoft.Resources.ResourceDeleteSuccess")]
    assert webhook.events()[0]["data"]["httpRequest"]["method"] == "PUT"


def test_retries_until_the_webhook_recovers(twin: Twin) -> None:
    hook = Webhook(statuses=[500, 503]).start()
    try:
        twin.events.configure(url=hook.url, **FAST)
        twin.create_vm("cvm-6")
        delivered(twin, 1)
        counts = [n.headers["aeg-delivery-count"] for n in hook.notifications()]
        assert counts == ["0", "1", "2"]
        assert [d["outcome"] for d in twin.events.deliveries] == ["failed", "failed", "delivered"]
    finally:
        hook.stop()


def test_400_is_dead_lettered_without_retry(twin: Twin) -> None:
    hook = Webhook(statuses=[400]).start()
    try:
        twin.events.configure(url=hook.url, **FAST)
        twin.create_vm("cvm-7")
        delivered(twin, 1, "dead-lettered")
        assert len(hook.notifications()) == 1
    finally:
        hook.stop()


def test_retries_stop_at_max_attempts(twin: Twin) -> None:
    hook = Webhook(statuses=[500] * 10).start()
    try:
        twin.events.configure(url=hook.url, max_attempts=3, **FAST)
        twin.create_vm("cvm-8")
        [row] = delivered(twin, 1, "dead-lettered")
        assert "retries exhausted" in row["detail"] and len(hook.notifications()) == 3
    finally:
        hook.stop()


def test_duplicates_drops_and_reordering_on_demand(twin: Twin, webhook: Webhook) -> None:
    twin.events.configure(url=webhook.url, duplicate_delay_seconds=0.05, **FAST)
    twin.events.duplicate_next(1)
    dup = twin.create_vm("dup")
    twin.events.drop_next(1)
    twin.create_vm("lost")
    delivered(twin, 2)
    assert [e["subject"] for e in webhook.events()] == [dup.resource_id, dup.resource_id]
    assert webhook.events()[0]["id"] == webhook.events()[1]["id"]
    assert [d["outcome"] for d in twin.events.deliveries if d["outcome"] == "dropped"] == ["dropped"]
    twin.events.hold()
    first, second, third = (twin.create_vm(n) for n in ("r1", "r2", "r3"))
    assert twin.events.release("reverse") == 3
    delivered(twin, 5)
    assert [e["subject"] for e in webhook.events()[2:]] == [third.resource_id, second.resource_id,
                                                            first.resource_id]


def test_rates_are_seeded(twin_factory, webhook: Webhook) -> None:
    twin = twin_factory(seed=9)
    twin.events.configure(url=webhook.url, drop_rate=0.5, duplicate_rate=0.5, **FAST)
    for i in range(12):
        twin.create_vm(f"vm{i}", emit_event=True)
    outcomes = [d["outcome"] for d in twin.events.deliveries]
    dropped = outcomes.count("dropped")
    assert 0 < dropped < 12
    wait_for(lambda: len(webhook.notifications()) >= 12 - dropped)
    with pytest.raises(ValueError):
        twin.events.configure(drop_rate=2)
    with pytest.raises(ValueError):
        twin.events.configure(schema="xml")
    with pytest.raises(ValueError):
        twin.events.configure(colour="red")


def test_delay_runs_on_the_virtual_clock(twin_factory, webhook: Webhook) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock)
    twin.events.configure(url=webhook.url, delay_seconds=300, **FAST)
    start = clock.time()
    twin.create_vm("late")
    [row] = delivered(twin, 1)
    assert row["at"] - start >= 300


def test_cloudevents_schema_uses_the_options_handshake(twin: Twin, webhook: Webhook) -> None:
    twin.events.configure(url=webhook.url, schema="cloudevents", **FAST)
    vm = twin.create_vm("ce")
    delivered(twin, 1)
    handshake = webhook.received[0]
    assert handshake.method == "OPTIONS" and handshake.headers["webhook-request-origin"] == "eventgrid.azure.net"
    [note] = webhook.notifications()
    assert note.headers["content-type"].startswith("application/cloudevents+json")
    assert note.body["specversion"] == "1.0" and note.body["subject"] == vm.resource_id
    assert note.body["type"] == "Microsoft.Resources.ResourceWriteSuccess"
    assert note.body["source"] == f"/subscriptions/{twin.config.subscription_id}"


def test_delivery_is_configured_through_the_admin_api(twin: Twin, webhook: Webhook) -> None:
    with admin_client(twin) as admin:
        config = admin.put("/admin/events/delivery", json={"url": webhook.url, "retry_delays": [0.05],
                                                           "operation_names": ["Microsoft.Compute/virtualMachines/write"]})
        assert config.status_code == 200 and config.json()["validation"]["status"] == "pending"
        assert admin.put("/admin/events/delivery", json={"schema": "xml"}).status_code == 400
        assert admin.post("/admin/events/hold").json() == {"held": True}
        admin.post("/admin/vms", json={"name": "a"})
        admin.post("/admin/vms", json={"name": "b"})
        assert admin.post("/admin/events/release", json={"order": "reverse"}).json() == {"released": 2}
        wait_for(lambda: len(webhook.notifications()) == 2)
        assert [e["subject"].rsplit("/", 1)[1] for e in webhook.events()] == ["b", "a"]
        assert admin.post("/admin/events/drop-next", json={"count": 1}).json() == {"drop-next": 1}
        assert admin.post("/admin/events/duplicate-next", json={"count": 0}).status_code == 400
        recorded = admin.get("/admin/events").json()
        assert len(recorded["emitted"]) == 2 and recorded["validation"]["status"] == "validated"
        assert admin.get("/admin/events/validate", params={"code": "wrong"}).status_code == 400


# ------------------------------------------------------------------------------------- topic endpoint
def test_publisher_client_sends_cloud_events_with_the_app_identity(twin: Twin) -> None:
    client = publisher_client(twin, TwinCredential(twin))
    client.send([CloudEvent(source="/skr/orchestrator", type="Skr.Onboarding.Completed", data={"outcome": "released"},
                            subject="vm-1")], connection_verify=twin.ca_bundle_path)
    [record] = twin.events.published
    assert record["schema"] == "cloudevents" and record["publisher"] == twin.app_principal.object_id
    assert record["event"]["type"] == "Skr.Onboarding.Completed" and record["event"]["data"] == {"outcome": "released"}
    assert twin.counters.get(caller=twin.app_principal.object_id, service="eventgrid") == 1


def test_publisher_client_with_key_and_sas_and_eventgrid_schema(twin: Twin) -> None:
    publisher_client(twin, AzureKeyCredential(twin.events.topic_key)).send(
        EventGridEvent(subject="s", event_type="Skr.Test", data={"a": 1}, data_version="1.0"),
        connection_verify=twin.ca_bundle_path)
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    sas = generate_sas(twin.urls.events, twin.events.topic_key, expiry)
    publisher_client(twin, AzureSasCredential(sas)).send([CloudEvent(source="/x", type="Skr.Sas", data=None)],
                                                         connection_verify=twin.ca_bundle_path)
    assert [r["publisher"] for r in twin.events.published] == ["sas-key", "sas-token"]
    assert twin.events.published[0]["schema"] == "eventgrid"
    with admin_client(twin) as admin:
        assert len(admin.get("/admin/events/published").json()["value"]) == 2
        assert admin.get("/admin/events/topic").json()["key"] == twin.events.topic_key


def test_publisher_is_refused_without_rights_or_with_a_bad_key(twin: Twin) -> None:
    event = [CloudEvent(source="/x", type="t", data=None)]
    ca = twin.ca_bundle_path
    with pytest.raises(ClientAuthenticationError):
        publisher_client(twin, AzureKeyCredential("d3Jvbmc=")).send(event, connection_verify=ca)
    stranger = twin.add_principal("stranger", replicated=True)
    with pytest.raises(HttpResponseError) as forbidden:
        publisher_client(twin, TwinCredential(twin, stranger.object_id)).send(event, connection_verify=ca)
    assert forbidden.value.status_code == 403
    expired = generate_sas(twin.urls.events, twin.events.topic_key, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    with pytest.raises(ClientAuthenticationError):
        publisher_client(twin, AzureSasCredential(expired)).send(event, connection_verify=ca)
    assert twin.events.published == []
