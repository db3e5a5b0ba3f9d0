"""Key Vault keys data plane through the real azure-keyvault-keys KeyClient."""

from __future__ import annotations

import json

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.keys import KeyClient, KeyReleasePolicy

from localdev.clock import VirtualClock
from localdev.twin.core import Twin
from localdev.twin.keyvault import b64url_decode
from localdev.twin.testing import TwinCredential, clear_challenge_cache, key_client, tls_context

POLICY = {"version": "1.0.0", "anyOf": [{"authority": "https://maa.example", "allOf": [
    {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
    {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"}]}]}


def policy(data: dict | None = None, immutable: bool = False) -> KeyReleasePolicy:
    return KeyReleasePolicy(json.dumps(data or POLICY).encode(), immutable=immutable)


def test_challenge_is_exactly_the_documented_401(twin: Twin) -> None:
    url = f"{twin.vault().url}/keys/x/?api-version=7.5"
    response = httpx.get(url, verify=tls_context(twin))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer authorization="https://login.microsoftonline.com/{twin.config.tenant_id}", '
        'resource="https://vault.azure.net"')
    assert response.json() == {"error": {"code": "Unauthorized",
                                         "message": "AKV10000: Request is missing a Bearer or PoP token."}}
    arm_token = twin.identity.mint_token(twin.app_principal.object_id, "https://management.azure.com")
    wrong = httpx.get(url, headers={"Authorization": f"Bearer {arm_token}"}, verify=tls_context(twin))
    assert wrong.status_code == 401 and wrong.json()["error"]["message"].startswith("AKV10022")


def test_key_client_follows_the_challenge_and_creates_an_exportable_hsm_key(twin: Twin) -> None:
    credential = TwinCredential(twin)
    clear_challenge_cache()
    client = KeyClient(twin.vault().url, credential, verify_challenge_resource=False,
                       connection_verify=twin.ca_bundle_path)
    key = client.create_rsa_key("cvm-a", hardware_protected=True, size=3072, exportable=True,
                                release_policy=policy(), tags={"vm": "a"})
    assert credential.requests == [("https://vault.azure.net/.default",)]
    assert key.key_type == "RSA-HSM" and key.properties.exportable is True
    assert len(key.key.n) == 384 and key.key.e == b"\x01\x00\x01"
    assert key.id.startswith(f"{twin.vault().url}/keys/cvm-a/") and len(key.properties.version) == 32
    assert json.loads(key.properties.release_policy.encoded_policy) == POLICY
    assert key.properties.tags == {"vm": "a"}
    assert key.properties.recovery_level == "Recoverable+Purgeable"
    stored = twin.vault().keys["cvm-a"].latest
    assert stored.exportable and json.loads(stored.release_policy) == POLICY


def test_ec_hsm_keys_and_software_keys(twin: Twin) -> None:
    client = key_client(twin)
    ec_key = client.create_ec_key("ec-1", hardware_protected=True, curve="P-384", exportable=True,
                                  release_policy=policy())
    assert ec_key.key_type == "EC-HSM" and ec_key.key.crv == "P-384" and len(ec_key.key.x) == 48
    soft = client.create_rsa_key("soft-1")
    assert soft.key_type == "RSA" and soft.properties.exportable is False
    assert soft.properties.release_policy is None


def test_skr_creation_rules(twin: Twin) -> None:
    client = key_client(twin)
    cases = [
        ({"hardware_protected": True, "exportable": True}, "AKV.SKR.1004"),
        ({"hardware_protected": True, "release_policy": policy()}, "AKV.SKR.1005"),
        ({"hardware_protected": False, "exportable": True, "release_policy": policy()}, "AKV.SKR.1006"),
        ({"hardware_protected": True, "exportable": True,
          "release_policy": policy({"anyOf": POLICY["anyOf"]})}, "missing 'version'"),
        ({"hardware_protected": True, "exportable": True, "release_policy": policy({"version": "1.0.0"})}, "anyOf"),
    ]
    for kwargs, message in cases:
        with pytest.raises(HttpResponseError) as refused:
            client.create_rsa_key("bad", **kwargs)
        assert refused.value.status_code == 400 and refused.value.error.code == "BadParameter"
        assert message in refused.value.error.message
    old = key_client(twin, api_version="7.2")
    with pytest.raises(HttpResponseError) as too_old:
        old.create_rsa_key("bad", hardware_protected=True, exportable=True, release_policy=policy())
    assert "AKV.SKR.1001" in too_old.value.error.message
    with pytest.raises(HttpResponseError) as size:
        client.create_rsa_key("bad", size=1024)
    assert size.value.error.code == "BadParameter"
    assert "bad" not in twin.vault().keys


def test_standard_vault_refuses_hsm_keys(twin_factory) -> None:
    twin = twin_factory(vault_sku="standard")
    with pytest.raises(HttpResponseError) as refused:
        key_client(twin).create_rsa_key("k", hardware_protected=True)
    assert refused.value.status_code == 403
    assert "standard vault" in refused.value.error.message


def test_recreate_adds_a_version_and_get_by_version_or_latest(twin: Twin) -> None:
    client = key_client(twin)
    first = client.create_rsa_key("k", hardware_protected=True, exportable=True, release_policy=policy())
    second = client.create_rsa_key("k", hardware_protected=True, exportable=True, release_policy=policy())
    assert first.properties.version != second.properties.version
    assert client.get_key("k").properties.version == second.properties.version  # GET /keys/k/
    assert client.get_key("k", first.properties.version).key.n == first.key.n
    versions = [p.version for p in client.list_properties_of_key_versions("k")]
    assert versions == [first.properties.version, second.properties.version]
    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_key("k", "0" * 32)
    assert missing.value.error.code == "KeyNotFound"
    with pytest.raises(ResourceNotFoundError) as unknown:
        client.get_key("nope")
    assert "A key with (name/id) nope was not found" in unknown.value.error.message


def test_update_enabled_tags_and_release_policy(twin: Twin) -> None:
    client = key_client(twin)
    client.create_rsa_key("u", hardware_protected=True, exportable=True, release_policy=policy())
    changed = {**POLICY, "anyOf": [{**POLICY["anyOf"][0], "authority": "https://other.example"}]}
    updated = client.update_key_properties("u", enabled=False, tags={"t": "1"}, release_policy=policy(changed))
    assert updated.properties.enabled is False and updated.properties.tags == {"t": "1"}
    assert json.loads(updated.properties.release_policy.encoded_policy) == changed
    locked = client.update_key_properties("u", release_policy=policy(changed, immutable=True))
    assert locked.properties.release_policy.immutable is True
    with pytest.raises(HttpResponseError) as immutable:
        client.update_key_properties("u", release_policy=policy())
    assert "AKV.SKR.1020" in immutable.value.error.message
    client.create_rsa_key("plain", hardware_protected=True)
    with pytest.raises(HttpResponseError) as not_exportable:
        client.update_key_properties("plain", release_policy=policy())
    assert "AKV.SKR.1005" in not_exportable.value.error.message


def test_list_keys_pages(twin_factory) -> None:
    twin = twin_factory(kv_page_size=2)
    client = key_client(twin)
    for i in range(5):
        client.create_ec_key(f"key-{i}")
    pages = list(client.list_properties_of_keys().by_page())
    assert [len(list(p)) for p in client.list_properties_of_keys(max_page_size=2).by_page()] == [2, 2, 1]
    assert [k.name for p in pages for k in p] == [f"key-{i}" for i in range(5)]
    assert all(k.version is None for k in client.list_properties_of_keys())


def test_soft_delete_with_polling_then_recover_or_purge(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock, key_delete_seconds=5)
    client = key_client(twin)
    client.create_rsa_key("d", hardware_protected=True, exportable=True, release_policy=policy())
    poller = client.begin_delete_key("d", _polling_interval=0.01)
    assert twin.vault().keys["d"].deleted
    with pytest.raises(ResourceExistsError) as being_deleted:
        client.create_rsa_key("d", hardware_protected=True)
    assert being_deleted.value.error.innererror["code"] == "ObjectIsBeingDeleted"
    clock.advance(6)  # the poller's GET /deletedkeys/d turns from 404 to 200
    deleted = poller.result()
    assert deleted.recovery_id == f"{twin.vault().url}/deletedkeys/d" and deleted.deleted_date is not None
    with pytest.raises(ResourceNotFoundError):
        client.get_key("d")
    with pytest.raises(ResourceExistsError) as recoverable:
        client.create_rsa_key("d", hardware_protected=True)
    assert recoverable.value.error.code == "Conflict"
    assert recoverable.value.error.innererror["code"] == "ObjectIsDeletedButRecoverable"
    assert [k.name for k in client.list_deleted_keys()] == ["d"]
    assert client.get_deleted_key("d").properties.exportable is True
    recovered = client.begin_recover_deleted_key("d", _polling_interval=0.01).result()
    assert recovered.name == "d" and client.get_key("d").properties.exportable
    client.begin_delete_key("d", _polling_interval=0.01)
    clock.advance(6)
    client.purge_deleted_key("d")
    with pytest.raises(ResourceNotFoundError) as purged:
        client.get_deleted_key("d")
    assert "Deleted Key not found" in purged.value.error.message
    assert client.create_rsa_key("d", hardware_protected=True).name == "d"


def test_deleted_keys_are_purged_after_retention(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock, soft_delete_retention_days=7)
    client = key_client(twin)
    key = client.create_ec_key("short")
    assert key.properties.recovery_level == "CustomizedRecoverable+Purgeable"
    client.begin_delete_key("short", _polling_interval=0.01).result()
    clock.advance(7 * 86400 - 10)
    assert client.get_deleted_key("short").name == "short"
    clock.advance(11)
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_key("short")
    assert client.create_ec_key("short").name == "short"


def test_every_operation_checks_its_data_action(twin: Twin) -> None:
    releaser = twin.add_principal("releaser", replicated=True)
    twin.grant(releaser.object_id, "Key Vault Crypto Service Release User", f"{twin.vault().resource_id}/keys/k")
    key_client(twin).create_rsa_key("k", hardware_protected=True, exportable=True, release_policy=policy())
    client = key_client(twin, releaser.object_id)
    with pytest.raises(HttpResponseError) as denied:
        client.get_key("k")
    error = denied.value.error
    assert denied.value.status_code == 403 and error.code == "Forbidden"
    assert error.innererror["code"] == "ForbiddenByRbac"
    assert "Action: 'Microsoft.KeyVault/vaults/keys/read'" in error.message
    assert f"oid={releaser.object_id}" in error.message
    for call in (lambda: client.create_rsa_key("k2"), lambda: list(client.list_properties_of_keys()),
                 lambda: client.begin_delete_key("k"), lambda: client.update_key_properties("k", enabled=False)):
        with pytest.raises(HttpResponseError) as each:
            call()
        assert each.value.status_code == 403
    reader = twin.add_principal("reader", replicated=True)
    twin.grant(reader.object_id, "Key Vault Reader", twin.vault().resource_id)
    assert key_client(twin, reader.object_id).get_key("k").name == "k"
    assert twin.counters.get(caller=releaser.object_id, service="keyvault") >= 5


def test_api_version_is_checked(twin: Twin) -> None:
    client = key_client(twin)
    client.create_ec_key("v")
    token = twin.identity.mint_token(twin.app_principal.object_id, "https://vault.azure.net")
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{twin.vault().url}/keys/v/"
    missing = httpx.get(base, headers=headers, verify=tls_context(twin))
    assert missing.status_code == 400 and "api-version" in missing.json()["error"]["message"]
    odd = httpx.get(base, params={"api-version": "1999-01-01"}, headers=headers, verify=tls_context(twin))
    assert odd.status_code == 400 and "not recognized" in odd.json()["error"]["message"]
    for version in ("7.4", "7.5", "7.6", "2025-07-01"):
        ok = httpx.get(base, params={"api-version": version}, headers=headers, verify=tls_context(twin))
        assert ok.status_code == 200 and ok.json()["key"]["kty"] == "EC"
    raw = httpx.get(f"{twin.vault().url}/keys/v", params={"api-version": "7.5"}, headers=headers,
                    verify=tls_context(twin))
    assert raw.status_code == 200
    data = key_client(twin).create_rsa_key("p", hardware_protected=True, exportable=True, release_policy=policy())
    body = httpx.get(f"{twin.vault().url}/keys/p/", params={"api-version": "7.5"}, headers=headers,
                     verify=tls_context(twin)).json()
    assert "=" not in body["release_policy"]["data"]
    assert json.loads(b64url_decode(body["release_policy"]["data"])) == POLICY
    assert body["key"]["kid"] == data.id
