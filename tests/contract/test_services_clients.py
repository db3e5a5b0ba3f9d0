"""The client factory: endpoints, credential chain, CA bundle, caching and short in-process retries."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError

from localdev.twin.core import Twin
from skr.clients import ClientConfig, ClientFactory, arm_scope, is_loopback_host
from skr.errors import Operation, classify
from skr.models import FailureCode, VmResourceId
from skr.services.vms import VmService
from tests.contract._services_support import app_settings, factory_for, started_twin, unique


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    with started_twin() as started:
        yield started


@pytest.mark.parametrize(
    ("endpoint", "scope"),
    [
        ("https://management.azure.com", "https://management.azure.com/.default"),
        ("https://MANAGEMENT.azure.com/", "https://management.azure.com/.default"),
        ("https://management.usgovcloudapi.net", "https://management.usgovcloudapi.net/.default"),
        ("https://management.chinacloudapi.cn", "https://management.chinacloudapi.cn/.default"),
        ("https://127.0.0.1:8443", "https://management.azure.com/.default"),
        ("https://localhost:9000", "https://management.azure.com/.default"),
    ],
)
def test_arm_scope_follows_the_cloud(endpoint: str, scope: str) -> None:
    assert arm_scope(endpoint) == scope


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("https://127.0.0.1:1234", True),
        ("https://127.5.6.7", True),
        ("https://[::1]:443", True),
        ("https://localhost", True),
        ("https://vault.localhost:8443", True),
        ("https://myvault.vault.azure.net", False),
        ("https://10.0.0.4", False),
        ("https://localhost.evil.example", False),
    ],
)
def test_loopback_detection(url: str, loopback: bool) -> None:
    assert is_loopback_host(url) is loopback


def test_challenge_resource_check_is_skipped_only_for_loopback_or_by_override() -> None:
    config = ClientConfig(vault_url="https://v.vault.azure.net")
    assert config.verify_challenge_for("https://v.vault.azure.net") is True
    assert config.verify_challenge_for("https://127.0.0.1:4443") is False
    forced = ClientConfig(vault_url="https://v.vault.azure.net", verify_challenge_resource=False)
    assert forced.verify_challenge_for("https://v.vault.azure.net") is False
    strict = ClientConfig(vault_url="https://127.0.0.1:1", verify_challenge_resource=True)
    assert strict.verify_challenge_for("https://127.0.0.1:1") is True


def test_config_from_settings_keeps_the_topic_key_out_of_repr(twin: Twin) -> None:
    settings = app_settings(twin, SKR_EVENTS_TOPIC_KEY="s3cr3t-topic-key", AZURE_CLIENT_ID=None)
    config = ClientConfig.from_settings(settings)
    assert config.events_topic_key == "s3cr3t-topic-key"
    assert "s3cr3t" not in repr(config)
    assert config.arm_endpoint == twin.urls.arm and config.ca_bundle == twin.ca_bundle_path
    assert config.retry_total == 0


def test_default_credential_reaches_the_twins_managed_identity_endpoint(twin: Twin) -> None:
    app = twin.app_principal.object_id
    tokens = twin.counters.get(caller=app, service="identity")
    vm = twin.create_vm(unique("cvm"))
    facts = VmService(factory_for(app_settings(twin))).inspect(VmResourceId.parse(vm.resource_id))
    assert facts.principal_id == vm.principal_id
    assert twin.counters.get(caller=app, service="identity") == tokens + 1  # ARM token, fetched once
    assert twin.counters.get(caller=app, service="arm", operation="Microsoft.Compute/virtualMachines/read") >= 1


def test_clients_are_cached_per_subscription_and_vault(twin: Twin) -> None:
    factory = factory_for(app_settings(twin))
    sub = twin.config.subscription_id
    assert factory.compute(sub) is factory.compute(sub.upper())
    assert factory.authorization(sub) is factory.authorization(sub)
    assert factory.keys() is factory.keys(twin.vault().url + "/")
    assert factory.events() is factory.events()
    assert factory_for(app_settings(twin, SKR_EVENTS_TOPIC_ENDPOINT=None)).events() is None


def _inspect(twin: Twin, factory: ClientFactory) -> float:
    vm = twin.create_vm(unique("cvm"))
    started = time.monotonic()
    VmService(factory).inspect(VmResourceId.parse(vm.resource_id))
    return time.monotonic() - started


def test_a_long_retry_after_is_handed_to_the_orchestrator_not_slept(twin: Twin) -> None:
    factory = factory_for(app_settings(twin, SKR_SDK_RETRY_TOTAL="3"))
    fault = twin.faults.add("throttle_storm", service="arm", path="virtualMachines/", retry_after=30, count=1)
    started = time.monotonic()
    with pytest.raises(HttpResponseError) as caught:
        _inspect(twin, factory)
    assert time.monotonic() - started < 10
    assert fault.hits == 1  # not retried in-process
    error = classify(caught.value, Operation.VM_READ)
    assert error.code is FailureCode.THROTTLED and error.retryable and error.retry_after_seconds == 30


def test_a_short_retry_after_and_transient_5xx_are_retried_in_process(twin: Twin) -> None:
    factory = factory_for(app_settings(twin, SKR_SDK_RETRY_TOTAL="3"))
    storm = twin.faults.add("throttle_storm", service="arm", path="virtualMachines/", retry_after=1, count=1)
    assert _inspect(twin, factory) >= 1.0
    assert storm.hits == 1
    outage = twin.faults.add("error", service="arm", path="virtualMachines/", status=503, count=2)
    _inspect(twin, factory)
    assert outage.hits == 2


def test_without_sdk_retries_a_5xx_surfaces_as_transient(twin: Twin) -> None:
    factory = factory_for(app_settings(twin, SKR_SDK_RETRY_TOTAL="0"))
    twin.faults.add("error", service="arm", path="virtualMachines/", status=503, count=1)
    with pytest.raises(HttpResponseError) as caught:
        _inspect(twin, factory)
    error = classify(caught.value, Operation.VM_READ)
    assert error.code is FailureCode.TRANSIENT and error.retryable
