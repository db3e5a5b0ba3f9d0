"""Fault injection: 5xx, latency, 429 storms, Key Vault and MAA outages, named flags, the admin API."""

from __future__ import annotations

import time

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ServiceResponseError

from localdev.clock import VirtualClock
from localdev.twin.core import Twin
from localdev.twin.testing import admin_client, compute_client, key_client, tls_context


def test_error_fault_is_retried_by_the_sdk_then_clears(twin: Twin) -> None:
    twin.create_vm("vm")
    twin.faults.add("error", service="arm", status=503, count=2)
    client = compute_client(twin)  # retry_total=2: two 503s, then the real answer
    assert client.virtual_machines.get("cvm-rg", "vm").name == "vm"
    assert twin.faults.list() == []


def test_error_fault_surfaces_when_retries_run_out(twin: Twin) -> None:
    fault = twin.faults.add("error", service="arm", path="virtualMachines", status=500, code="InternalServerError")
    client = compute_client(twin, retry_total=0)
    with pytest.raises(HttpResponseError) as failed:
        client.virtual_machines.get("cvm-rg", "vm")
    assert failed.value.status_code == 500 and failed.value.error.code == "InternalServerError"
    assert "Retry-After" not in failed.value.response.headers  # only throttling carries Retry-After
    assert fault.hits == 1
    with pytest.raises(ValueError):
        twin.faults.add("error", status=404)


def test_error_rate_is_seeded_and_partial(twin_factory) -> None:
    twin = twin_factory(seed=3)
    twin.faults.add("error", service="arm", rate=0.5)
    hits = sum(twin.faults.active("error", service="arm") is not None for _ in range(400))
    assert 150 < hits < 250
    assert twin.faults.active("error", service="keyvault") is None


def test_latency_fault_waits_on_the_twin_clock(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock)
    twin.faults.add("latency", service="arm", seconds=120, count=1)
    before_virtual, before_real = clock.time(), time.monotonic()
    assert list(compute_client(twin).virtual_machines.list_all()) == []
    assert clock.time() - before_virtual >= 120
    assert time.monotonic() - before_real < 5


def test_latency_fault_on_a_real_clock(twin: Twin) -> None:
    twin.faults.add("latency", service="keyvault", seconds=0.3, count=1)
    start = time.monotonic()
    key_client(twin).create_ec_key("slow")
    assert time.monotonic() - start >= 0.3


def test_throttle_storm_answers_429_with_retry_after(twin: Twin) -> None:
    twin.faults.add("throttle_storm", service="arm", retry_after=1, count=1)
    client = compute_client(twin)
    start = time.monotonic()
    assert list(client.virtual_machines.list_all()) == []
    assert time.monotonic() - start >= 1  # the SDK slept Retry-After
    twin.faults.add("throttle_storm", service="keyvault", retry_after=7, duration=60)
    with pytest.raises(HttpResponseError) as storm:
        key_client(twin, retry_total=0).create_ec_key("k")
    assert storm.value.status_code == 429 and storm.value.response.headers["Retry-After"] == "7"


def test_key_vault_outage_for_one_vault(twin_factory) -> None:
    twin = twin_factory(vault_names=("v1", "v2"))
    twin.faults.add("kv_outage", vault="v1", duration=30)
    with pytest.raises(HttpResponseError) as down:
        key_client(twin, vault="v1", retry_total=0).create_ec_key("k")
    assert down.value.status_code == 503 and down.value.error.code == "ServiceUnavailable"
    assert key_client(twin, vault="v2").create_ec_key("k").name == "k"
    assert twin.counters.get(service="keyvault", operation="Microsoft.KeyVault/vaults/keys/create/action") == 2


def test_maa_outage(twin: Twin) -> None:
    url = f"{twin.urls.maa}/.well-known/openid-configuration"
    assert httpx.get(url, verify=tls_context(twin)).status_code == 200
    twin.faults.add("maa_outage", count=1)
    assert httpx.get(url, verify=tls_context(twin)).status_code == 503
    assert httpx.get(url, verify=tls_context(twin)).status_code == 200


def test_named_flags_match_count_and_expire(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock)
    vm = twin.create_vm("target")
    twin.faults.add("runcommand_conflict", vm="target", count=2)
    twin.faults.add("runcommand_hang", vm=vm.resource_id, duration=10)
    assert twin.faults.active("runcommand_conflict", vm="/subscriptions/s/resourceGroups/r/providers/"
                              "Microsoft.Compute/virtualMachines/other") is None
    assert twin.faults.active("runcommand_conflict", vm=vm.resource_id.upper()) is not None
    assert twin.faults.active("runcommand_conflict", vm=vm.resource_id) is not None
    assert twin.faults.active("runcommand_conflict", vm=vm.resource_id) is None
    assert twin.faults.active("runcommand_hang") is None  # the constraint needs the attribute
    assert twin.faults.active("runcommand_hang", vm=vm.resource_id) is not None
    clock.advance(11)
    assert twin.faults.active("runcommand_hang", vm=vm.resource_id) is None
    for kind in ("runcommand_timeout", "vm_delete_during_run"):
        fault = twin.faults.add(kind)
        assert twin.faults.active(kind, vm=vm.resource_id) is fault
    with pytest.raises(ValueError, match="unknown fault kind"):
        twin.faults.add("meteor")
    with pytest.raises(ValueError):
        twin.faults.add("error", rate=2)


def test_admin_api_manages_faults(twin: Twin) -> None:
    with admin_client(twin) as admin:
        created = admin.post("/admin/faults", json={"kind": "error", "match": {"service": "arm"},
                                                    "params": {"status": 502}, "count": 1})
        assert created.status_code == 201
        fault = created.json()
        assert fault["kind"] == "error" and fault["params"] == {"status": 502} and fault["match"] == {"service": "arm"}
        assert [f["id"] for f in admin.get("/admin/faults").json()["value"]] == [fault["id"]]
        with pytest.raises((HttpResponseError, ServiceResponseError)):
            list(compute_client(twin, retry_total=0).virtual_machines.list_all())
        assert admin.get("/admin/faults").json()["value"] == []
        second = admin.post("/admin/faults", json={"kind": "kv_outage"}).json()
        assert admin.delete(f"/admin/faults/{second['id']}").status_code == 204
        assert admin.delete(f"/admin/faults/{second['id']}").status_code == 404
        assert admin.post("/admin/faults", json={"kind": "nope"}).status_code == 400
        admin.post("/admin/faults", json={"kind": "maa_outage"})
        assert admin.delete("/admin/faults").status_code == 204
        assert admin.get("/admin/faults").json()["value"] == []
        counters = admin.get("/admin/counters", params={"service": "arm"}).json()
        assert counters["value"] == [{"caller": twin.app_principal.object_id, "service": "arm",
                                      "operation": "fault:error", "count": 1}]
        assert admin.delete("/admin/counters").status_code == 204
        assert admin.get("/admin/counters").json()["total"] == 0
