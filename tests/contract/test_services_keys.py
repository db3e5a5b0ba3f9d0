"""KeyService against the twin's Key Vault with the real azure-keyvault-keys client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError

from localdev.twin import roles
from localdev.twin.core import Twin
from skr.errors import Operation, SkrError, classify
from skr.models import FailureCode, KeyRef, VmFacts, VmResourceId
from skr.policy import decode_policy, policy_json_bytes, same_policy
from skr.services.keys import KeyService
from skr.settings import SettingsError
from tests.contract._services_support import (
    app_settings,
    exportable_key,
    factory_for,
    operator_keys,
    other_policy,
    started_twin,
    unique,
)

FAST = {"SKR_KEY_SIZE": "2048"}  # 3072-bit generation is exercised once; the rest stay quick


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    with started_twin() as started:
        yield started


def service(twin: Twin, **overrides: str | None) -> KeyService:
    settings = app_settings(twin, **{**FAST, **overrides})
    return KeyService(factory_for(settings), settings)


def facts(twin: Twin, name: str, tags: dict[str, str] | None = None) -> VmFacts:
    return VmFacts(vm_id=VmResourceId.parse(twin.vm_resource_id(name)), tags=tags or {})


def test_creates_an_exportable_rsa_hsm_key_with_the_configured_policy(twin: Twin) -> None:
    keys = service(twin, SKR_KEY_SIZE=None)  # the default size, 3072
    name = unique("cvm")
    ref = keys.ensure(name)
    assert ref.created and not ref.shared and ref.version
    assert ref.key_type == "RSA-HSM"
    assert str(ref.resource_id) == f"{twin.vault().resource_id}/keys/{name}"
    stored = operator_keys(twin).get_key(name)
    assert stored.properties.exportable is True
    assert stored.properties.version == ref.version
    assert stored.key.n is not None and len(stored.key.n) * 8 == 3072
    assert stored.properties.release_policy is not None
    policy = decode_policy(stored.properties.release_policy.encoded_policy)
    assert same_policy(policy, app_settings(twin).release_policy)
    assert stored.properties.tags == {
        "managed-by": "skr-orchestrator",
        "skr-release-policy": stored.properties.tags["skr-release-policy"],
    }


def test_second_ensure_reuses_the_same_version(twin: Twin) -> None:
    keys = service(twin)
    name = unique("cvm")
    first = keys.ensure(name)
    again = keys.ensure(name)
    assert again.version == first.version and not again.created
    assert len(list(operator_keys(twin).list_properties_of_key_versions(name))) == 1


def test_an_equivalent_policy_in_another_order_is_reused(twin: Twin) -> None:
    keys = service(twin)
    name = unique("cvm")
    configured = json.loads(policy_json_bytes(app_settings(twin).release_policy))
    rule = configured["anyOf"][0]
    rule["allOf"] = list(reversed(rule["allOf"]))
    rule["authority"] = rule["authority"].upper().replace("HTTPS://", "https://") + "/"
    created = exportable_key(twin, name, json.dumps(configured).encode())
    ref = keys.ensure(name)
    assert not ref.created and ref.version == created.properties.version


def test_policy_mismatch_fails_by_default_and_changes_nothing(twin: Twin) -> None:
    name = unique("cvm")
    operator = operator_keys(twin)
    original = exportable_key(twin, name, other_policy(twin))
    with pytest.raises(SkrError) as caught:
        service(twin).ensure(name)
    error = caught.value.error
    assert error.code is FailureCode.KEY_POLICY_MISMATCH and not error.retryable
    assert "SKR_KEY_POLICY_MISMATCH=new_version" in error.message
    versions = list(operator.list_properties_of_key_versions(name))
    assert [v.version for v in versions] == [original.properties.version]


def test_policy_mismatch_new_version_mode_adds_a_version_with_the_configured_policy(twin: Twin) -> None:
    name = unique("cvm")
    operator = operator_keys(twin)
    original = exportable_key(twin, name, other_policy(twin))
    ref = service(twin, SKR_KEY_POLICY_MISMATCH="new_version").ensure(name)
    assert ref.created and ref.version != original.properties.version
    latest = operator.get_key(name)
    assert latest.properties.version == ref.version
    assert latest.properties.release_policy is not None
    assert same_policy(
        decode_policy(latest.properties.release_policy.encoded_policy), app_settings(twin).release_policy
    )


def test_ec_hsm_keys(twin: Twin) -> None:
    keys = service(twin, SKR_KEY_SIZE=None, SKR_KEY_TYPE="EC-HSM", SKR_KEY_CURVE="P-384")
    name = unique("cvm-ec")
    ref = keys.ensure(name)
    assert ref.key_type == "EC-HSM"
    stored = operator_keys(twin).get_key(name)
    assert stored.key.crv is not None and stored.key.crv.value == "P-384"
    assert stored.properties.exportable is True


def test_key_selection_override_tag_and_template(twin: Twin) -> None:
    keys = service(twin)
    assert keys.choose_name(facts(twin, "web-01")) == ("cvm-web-01", False)
    assert keys.choose_name(facts(twin, "web-01", {"SKR-KEY": "fleet-key"})) == ("fleet-key", True)
    assert keys.choose_name(facts(twin, "web-01", {"skr-key": "fleet-key"}), "explicit") == ("explicit", False)
    templated = service(twin, SKR_KEY_NAME_TEMPLATE="skr-{resource_group}-{vm_name}")
    assert templated.choose_name(facts(twin, "web-01")) == ("skr-cvm-rg-web-01", False)
    with pytest.raises(SkrError) as caught:
        keys.choose_name(facts(twin, "web-01", {"skr-key": "not a key name!"}))
    assert caught.value.error.code is FailureCode.INVALID_REQUEST
    assert "skr-key" in caught.value.error.message


def test_shared_key_is_marked_shared_and_reused_by_the_group(twin: Twin) -> None:
    keys = service(twin)
    shared_name = unique("fleet")
    name_a, shared_a = keys.choose_name(facts(twin, "a", {"skr-key": shared_name}))
    name_b, shared_b = keys.choose_name(facts(twin, "b", {"skr-key": shared_name}))
    first = keys.ensure(name_a, shared=shared_a)
    second = keys.ensure(name_b, shared=shared_b)
    assert first.shared and second.shared and first.created and not second.created
    assert first.version == second.version


def test_soft_deleted_name_is_a_classified_terminal_error(twin: Twin) -> None:
    name = unique("gone")
    operator = operator_keys(twin)
    operator.create_rsa_key(name, size=2048, hardware_protected=True)
    operator.begin_delete_key(name).wait()
    with pytest.raises(HttpResponseError) as caught:
        service(twin).ensure(name)
    error = classify(caught.value, Operation.KEY_WRITE)
    assert error.code is FailureCode.KEY_DELETED and not error.retryable
    assert error.inner_code == "ObjectIsDeletedButRecoverable"


def test_existing_non_exportable_key_is_refused(twin: Twin) -> None:
    name = unique("plain")
    operator_keys(twin).create_rsa_key(name, size=2048, hardware_protected=True)
    with pytest.raises(SkrError) as caught:
        service(twin).ensure(name)
    assert caught.value.error.code is FailureCode.NOT_EXPORTABLE
    assert "exportable=False" in caught.value.error.message


def test_disabled_latest_version_gets_a_fresh_version(twin: Twin) -> None:
    keys = service(twin)
    name = unique("cvm")
    first = keys.ensure(name)
    operator_keys(twin).update_key_properties(name, first.version, enabled=False)
    again = keys.ensure(name)
    assert again.created and again.version != first.version
    assert operator_keys(twin).get_key(name).properties.enabled is True


def test_disable_turns_off_every_version_of_a_per_vm_key(twin: Twin) -> None:
    keys = service(twin, SKR_KEY_POLICY_MISMATCH="new_version")
    name = unique("cvm")
    operator = operator_keys(twin)
    exportable_key(twin, name, other_policy(twin))
    ref = keys.ensure(name)  # a second version
    assert keys.disable(ref) is True
    versions = list(operator.list_properties_of_key_versions(name))
    assert len(versions) == 2 and not any(v.enabled for v in versions)
    assert keys.disable(ref) is True  # idempotent


def test_disable_leaves_shared_keys_and_missing_keys_alone(twin: Twin) -> None:
    keys = service(twin)
    shared = keys.ensure(unique("fleet"), shared=True)
    assert keys.disable(shared) is False
    assert operator_keys(twin).get_key(shared.name).properties.enabled is True
    missing = KeyRef(vault_url=twin.vault().url, name=unique("never"))
    assert keys.disable(missing) is False


def test_missing_vault_resource_id_is_a_clear_error(twin: Twin) -> None:
    with pytest.raises(SkrError) as caught:
        service(twin, SKR_VAULT_RESOURCE_ID=None).ensure(unique("cvm"))
    assert caught.value.error.code is FailureCode.INVALID_REQUEST
    assert "SKR_VAULT_RESOURCE_ID" in caught.value.error.message


def test_vault_resource_id_setting_is_validated(twin: Twin) -> None:
    with pytest.raises(SettingsError, match="SKR_VAULT_RESOURCE_ID"):
        app_settings(twin, SKR_VAULT_RESOURCE_ID="/subscriptions/not-a-guid/resourceGroups/rg")
    with pytest.raises(SettingsError, match="names vault 'other'"):
        app_settings(
            twin,
            SKR_VAULT_URL="https://mine.vault.azure.net",
            SKR_VAULT_RESOURCE_ID=f"/subscriptions/{twin.config.subscription_id}/resourceGroups/rg"
            "/providers/Microsoft.KeyVault/vaults/other",
        )


def test_our_identity_without_key_rights_is_not_authorized() -> None:
    with started_twin() as twin:
        vault = twin.vault()
        app = twin.app_principal.object_id
        for assignment in list(twin.rbac.assignments.values()):
            if assignment.principal_id == app and assignment.role_guid == roles.KV_CRYPTO_OFFICER:
                twin.rbac.remove_assignment(assignment.name, propagate=False)
        name = unique("cvm")
        with pytest.raises(HttpResponseError) as caught:
            service(twin).ensure(name)
        error = classify(caught.value, Operation.KEY_WRITE)
        assert error.code is FailureCode.NOT_AUTHORIZED and not error.retryable
        assert name not in {k.lower() for k in vault.keys}
