"""ARM throttling: per-principal token buckets, 429 + Retry-After, remaining-quota headers."""

from __future__ import annotations

import httpx
import pytest
from azure.core.exceptions import HttpResponseError

from localdev.clock import VirtualClock
from localdev.twin.core import Twin
from localdev.twin.testing import authorization_client, compute_client, tls_context


def _get(twin: Twin, principal_id: str, path: str) -> httpx.Response:
    token = twin.identity.mint_token(principal_id, "https://management.azure.com")
    return httpx.get(f"{twin.urls.arm}/subscriptions/{twin.config.subscription_id}{path}",
                     params={"api-version": "2024-07-01"}, headers={"Authorization": f"Bearer {token}"},
                     verify=tls_context(twin))


def test_reads_bucket_answers_429_with_retry_after_and_refills_on_the_clock(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock, throttle_reads=(3, 0.5))
    path = "/providers/Microsoft.Compute/virtualMachines"
    app = twin.app_principal.object_id
    with clock.busy():
        remaining = [_get(twin, app, path).headers["x-ms-ratelimit-remaining-subscription-reads"] for _ in range(3)]
        assert remaining == ["2", "1", "0"]
        throttled = _get(twin, app, path)
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
        assert throttled.json()["error"]["code"] == "SubscriptionRequestsThrottled"
        assert throttled.headers["x-ms-ratelimit-remaining-subscription-reads"] == "0"
        other = twin.operator_principal.object_id  # buckets are per principal
        assert _get(twin, other, path).status_code == 200
        clock.advance(2)
        assert _get(twin, app, path).status_code == 200


def test_writes_and_deletes_have_their_own_buckets(twin_factory) -> None:
    twin = twin_factory(throttle_writes=(1, 0.01), throttle_deletes=(1, 0.01))
    assert twin.throttle.take("p", "writes").allowed
    assert not twin.throttle.take("p", "writes").allowed
    assert twin.throttle.take("p", "deletes").allowed
    assert twin.throttle.take("p", "reads").remaining == 249
    twin.throttle.configure(enabled=False)
    assert twin.throttle.take("p", "writes").remaining is None
    with pytest.raises(ValueError):
        twin.throttle.configure(bogus=(1, 1))


def test_sdk_honours_retry_after_and_succeeds(twin_factory) -> None:
    twin = twin_factory(throttle_reads=(1, 1.0))
    client = compute_client(twin)
    assert list(client.virtual_machines.list_all()) == []
    assert list(client.virtual_machines.list_all()) == []  # 429, Retry-After 1, retried by the SDK
    reads = twin.counters.get(caller=twin.app_principal.object_id, operation="Microsoft.Compute/virtualMachines/read")
    assert reads == 3


def test_sdk_gives_up_with_the_429_when_retries_are_exhausted(twin_factory) -> None:
    twin = twin_factory(throttle_reads=(1, 0.001))
    client = authorization_client(twin, retry_total=0)
    scope = f"/subscriptions/{twin.config.subscription_id}"
    client.role_definitions.get(scope, "acdd72a7-3385-48ef-bd42-f606fba81ae7")
    with pytest.raises(HttpResponseError) as throttled:
        client.role_definitions.get(scope, "acdd72a7-3385-48ef-bd42-f606fba81ae7")
    assert throttled.value.status_code == 429
    assert int(throttled.value.response.headers["Retry-After"]) >= 1


def test_throttling_can_be_switched_off(twin_factory) -> None:
    twin = twin_factory(throttling=False, throttle_reads=(1, 0.001))
    path = "/providers/Microsoft.Compute/virtualMachines"
    responses = [_get(twin, twin.app_principal.object_id, path) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "x-ms-ratelimit-remaining-subscription-reads" not in responses[0].headers
