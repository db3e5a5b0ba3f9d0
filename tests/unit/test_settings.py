"""Settings: defaults, every validation error naming its variable, JSON round trip, scope guard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from skr.models import ScopeId, VmResourceId
from skr.naming import NamingError
from skr.policy import build_policy, parse_conditions
from skr.settings import (
    KNOWN_VARIABLES,
    KeyCurve,
    KeyPolicyMismatch,
    KeyType,
    ReleaseEncryption,
    ReleaseMode,
    RoleMode,
    RunCommandMode,
    Settings,
    SettingsError,
    TagFilter,
    load_settings,
    ncrontab_problem,
)

SUB = "6f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
SUB2 = "00000000-0000-0000-0000-0000000000aa"
MAA = "https://sharedweu.weu.attest.azure.net"
BASE = {
    "SKR_VAULT_URL": "https://kv-skr.vault.azure.net/",
    "SKR_MAA_ENDPOINT": MAA,
    "SKR_SCOPES": f"/subscriptions/{SUB}",
}


def load(**overrides: str) -> Settings:
    return load_settings({**BASE, **overrides})


def error(**overrides: str) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        load_settings({k: v for k, v in {**BASE, **overrides}.items() if v != "<unset>"})
    return info.value


def vm(rg: str = "rg", sub: str = SUB, name: str = "cvm-01") -> VmResourceId:
    return VmResourceId.parse(
        f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
    )


def test_defaults() -> None:
    settings = load()
    assert settings.vault_url == "https://kv-skr.vault.azure.net"
    assert settings.maa_endpoint == MAA
    assert settings.release_policy == build_policy(MAA) and settings.policy_source == "default"
    assert (settings.key_type, settings.key_size, settings.key_curve) == (KeyType.RSA_HSM, 3072, None)
    assert settings.key_name_template == "cvm-{vm_name}" and settings.key_tag == "skr-key"
    assert settings.key_policy_mismatch is KeyPolicyMismatch.FAIL
    assert (settings.role_mode, settings.custom_role_name) == (RoleMode.BUILTIN, "SKR Key Release User")
    assert settings.scopes == (ScopeId.parse(f"/subscriptions/{SUB}"),) and settings.tag_filter is None
    assert (settings.propagation_deadline_seconds, settings.poll_initial_seconds, settings.poll_max_seconds) == (
        900,
        5,
        60,
    )
    assert (settings.in_vm_retry_seconds, settings.run_command_timeout_seconds) == (90, 600)
    assert settings.run_command_mode is RunCommandMode.MANAGED and settings.release_mode is ReleaseMode.REST
    assert settings.release_enc is ReleaseEncryption.CKM_RSA_AES_KEY_WRAP
    assert settings.events_topic_endpoint is None and settings.events_topic_key is None
    assert settings.disable_key_on_offboard is False
    assert settings.reconcile_schedule == "0 */15 * * * *"
    assert settings.arm_endpoint == "https://management.azure.com"
    assert (settings.ca_bundle, settings.sdk_retry_total, settings.task_hub) == (None, 3, "SkrOrchestrator")
    assert settings.azure_client_id is None and settings.warnings == ()


def test_every_setting_overridden(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load(
        SKR_VAULT_URL="https://127.0.0.1:8443",
        SKR_KEY_NAME_TEMPLATE="{resource_group}-{vm_name}",
        SKR_KEY_TAG="skr-shared-key",
        SKR_KEY_TYPE="ec-hsm",
        SKR_KEY_CURVE="P-384",
        SKR_MAA_ENDPOINT="https://127.0.0.1:8444/",
        SKR_RELEASE_CLAIMS=json.dumps([{"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"}]),
        SKR_KEY_POLICY_MISMATCH="new_version",
        SKR_ROLE_MODE="custom",
        SKR_CUSTOM_ROLE_NAME="My Release Role",
        SKR_SCOPES=f"/subscriptions/{SUB}/resourceGroups/rg-a, /subscriptions/{SUB2}",
        SKR_TAG_FILTER="skr=enabled",
        SKR_PROPAGATION_DEADLINE_SECONDS="1200",
        SKR_POLL_INITIAL_SECONDS="2",
        SKR_POLL_MAX_SECONDS="30",
        SKR_IN_VM_RETRY_SECONDS="60",
        SKR_RUN_COMMAND_TIMEOUT_SECONDS="300",
        SKR_RUN_COMMAND_MODE="action",
        SKR_RELEASE_MODE="azureattestskr",
        SKR_RELEASE_ENC="RSA_AES_KEY_WRAP_256",
        SKR_EVENTS_TOPIC_ENDPOINT="https://topic.westeurope-1.eventgrid.azure.net/api/events",
        SKR_EVENTS_TOPIC_KEY="topic-key-value",
        SKR_DISABLE_KEY_ON_OFFBOARD="yes",
        SKR_RECONCILE_SCHEDULE="30 */5 * * * mon-fri",
        SKR_ARM_ENDPOINT="https://127.0.0.1:8445/",
        SKR_CA_BUNDLE=str(bundle),
        SKR_SDK_RETRY_TOTAL="0",
        SKR_TASK_HUB="SkrTest01",
        AZURE_CLIENT_ID="0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D",
    )
    assert settings.vault_url == "https://127.0.0.1:8443" and settings.maa_endpoint == "https://127.0.0.1:8444"
    assert (settings.key_type, settings.key_size, settings.key_curve) == (KeyType.EC_HSM, None, KeyCurve.P_384)
    assert settings.policy_source == "claims"
    assert settings.release_policy.authorities[0].authority == "https://127.0.0.1:8444"
    assert settings.key_policy_mismatch is KeyPolicyMismatch.NEW_VERSION and settings.role_mode is RoleMode.CUSTOM
    assert settings.tag_filter == TagFilter(name="skr", value="enabled")
    assert len(settings.scopes) == 2
    assert settings.run_command_mode is RunCommandMode.ACTION and settings.release_mode is ReleaseMode.AZUREATTESTSKR
    assert settings.release_enc is ReleaseEncryption.RSA_AES_KEY_WRAP_256
    assert settings.events_topic_key is not None and settings.events_topic_key.get_secret_value() == "topic-key-value"
    assert settings.disable_key_on_offboard is True
    assert settings.arm_endpoint == "https://127.0.0.1:8445" and settings.ca_bundle == str(bundle)
    assert (settings.sdk_retry_total, settings.task_hub) == (0, "SkrTest01")
    assert settings.azure_client_id == "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    assert settings.orchestration().model_dump() == {
        "propagation_deadline_seconds": 1200,
        "poll_initial_seconds": 2,
        "poll_max_seconds": 30,
        "in_vm_retry_seconds": 60,
        "run_command_timeout_seconds": 300,
        "disable_key_on_offboard": True,
    }


def test_json_round_trip_never_carries_the_topic_key() -> None:
    settings = load(
        SKR_EVENTS_TOPIC_ENDPOINT="https://t.example", SKR_EVENTS_TOPIC_KEY="very-secret-key", SKR_TAG_FILTER="a=b"
    )
    data = json.loads(json.dumps(settings.to_json()))
    assert "very-secret-key" not in json.dumps(data) and "very-secret-key" not in repr(settings)
    assert "events_topic_key" not in data
    restored = Settings.model_validate(data)
    assert restored == settings.model_copy(update={"events_topic_key": None})
    assert restored.release_policy == settings.release_policy and restored.scopes == settings.scopes


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KNOWN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in BASE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SKR_KEY_SIZE", "4096")
    assert load_settings().key_size == 4096


@pytest.mark.parametrize(
    ("overrides", "variable", "message"),
    [
        ({"SKR_VAULT_URL": "<unset>"}, "SKR_VAULT_URL", "is required"),
        ({"SKR_VAULT_URL": "  "}, "SKR_VAULT_URL", "is required"),
        ({"SKR_VAULT_URL": "http://kv.vault.azure.net"}, "SKR_VAULT_URL", "https://"),
        ({"SKR_VAULT_URL": "https://kv.vault.azure.net/keys"}, "SKR_VAULT_URL", "bare https://host"),
        ({"SKR_VAULT_URL": "https://kv.vault.azure.net:99999"}, "SKR_VAULT_URL", "invalid port"),
        ({"SKR_MAA_ENDPOINT": "<unset>"}, "SKR_MAA_ENDPOINT", "is required"),
        ({"SKR_MAA_ENDPOINT": "sharedweu.weu.attest.azure.net"}, "SKR_MAA_ENDPOINT", "https://"),
        ({"SKR_MAA_ENDPOINT": "https://maa?x=1"}, "SKR_MAA_ENDPOINT", "bare"),
        ({"SKR_KEY_NAME_TEMPLATE": "cvm-{name}"}, "SKR_KEY_NAME_TEMPLATE", "unknown placeholder {name}"),
        ({"SKR_KEY_NAME_TEMPLATE": "cvm_{vm_name}"}, "SKR_KEY_NAME_TEMPLATE", "contains '_'"),
        ({"SKR_KEY_TAG": "bad/tag"}, "SKR_KEY_TAG", "cannot"),
        ({"SKR_KEY_TYPE": "RSA"}, "SKR_KEY_TYPE", "one of RSA-HSM, EC-HSM"),
        ({"SKR_KEY_SIZE": "1024"}, "SKR_KEY_SIZE", "one of 2048, 3072, 4096"),
        ({"SKR_KEY_SIZE": "big"}, "SKR_KEY_SIZE", "whole number"),
        ({"SKR_KEY_CURVE": "P-256"}, "SKR_KEY_CURVE", "only applies to SKR_KEY_TYPE=EC-HSM"),
        ({"SKR_KEY_TYPE": "EC-HSM", "SKR_KEY_SIZE": "2048"}, "SKR_KEY_SIZE", "only applies to SKR_KEY_TYPE=RSA-HSM"),
        ({"SKR_KEY_TYPE": "EC-HSM", "SKR_KEY_CURVE": "P-192"}, "SKR_KEY_CURVE", "one of P-256, P-384, P-521"),
        ({"SKR_RELEASE_CLAIMS": "[{", "SKR_RELEASE_POLICY_FILE": "p.json"}, "SKR_RELEASE_CLAIMS", "mutually exclusive"),
        ({"SKR_RELEASE_CLAIMS": "[{"}, "SKR_RELEASE_CLAIMS", "not valid JSON"),
        ({"SKR_RELEASE_CLAIMS": "{}"}, "SKR_RELEASE_CLAIMS", "non-empty JSON list"),
        ({"SKR_RELEASE_CLAIMS": '[{"claim": "a", "equal": 1}]'}, "SKR_RELEASE_CLAIMS", "[0].equal: unknown operator"),
        ({"SKR_KEY_POLICY_MISMATCH": "ignore"}, "SKR_KEY_POLICY_MISMATCH", "fail, new_version"),
        ({"SKR_ROLE_MODE": "owner"}, "SKR_ROLE_MODE", "builtin, custom"),
        ({"SKR_CUSTOM_ROLE_NAME": "r" * 513}, "SKR_CUSTOM_ROLE_NAME", "512"),
        ({"SKR_SCOPES": "<unset>"}, "SKR_SCOPES", "is required"),
        ({"SKR_SCOPES": " , ,"}, "SKR_SCOPES", "lists no scope"),
        ({"SKR_SCOPES": "/subscriptions/not-a-guid"}, "SKR_SCOPES", "invalid subscription id"),
        ({"SKR_SCOPES": f"/subscriptions/{SUB}/resourceGroups"}, "SKR_SCOPES", "resourceGroups"),
        ({"SKR_SCOPES": f"/subscriptions/{SUB}/providers/x"}, "SKR_SCOPES", "resourceGroups"),
        ({"SKR_TAG_FILTER": "novalue"}, "SKR_TAG_FILTER", "name=value"),
        ({"SKR_TAG_FILTER": "=x"}, "SKR_TAG_FILTER", "name=value"),
        ({"SKR_TAG_FILTER": "a<b=c"}, "SKR_TAG_FILTER", "cannot"),
        ({"SKR_TAG_FILTER": "t" * 513 + "=c"}, "SKR_TAG_FILTER", "512"),
        ({"SKR_PROPAGATION_DEADLINE_SECONDS": "0"}, "SKR_PROPAGATION_DEADLINE_SECONDS", "between 1 and"),
        ({"SKR_PROPAGATION_DEADLINE_SECONDS": "3", "SKR_POLL_INITIAL_SECONDS": "4"}, "SKR_PROPAGATION_DEADLINE_SECONDS", ">= SKR_POLL_INITIAL_SECONDS"),
        ({"SKR_POLL_INITIAL_SECONDS": "-1"}, "SKR_POLL_INITIAL_SECONDS", "between 1 and 3600"),
        ({"SKR_POLL_MAX_SECONDS": "4"}, "SKR_POLL_MAX_SECONDS", ">= SKR_POLL_INITIAL_SECONDS (5)"),
        ({"SKR_IN_VM_RETRY_SECONDS": "600"}, "SKR_IN_VM_RETRY_SECONDS", "shorter than SKR_RUN_COMMAND_TIMEOUT_SECONDS (600)"),
        ({"SKR_RUN_COMMAND_TIMEOUT_SECONDS": "10"}, "SKR_RUN_COMMAND_TIMEOUT_SECONDS", "between 30 and 5400"),
        ({"SKR_RUN_COMMAND_MODE": "ssh"}, "SKR_RUN_COMMAND_MODE", "managed, action"),
        ({"SKR_RELEASE_MODE": "sidecar"}, "SKR_RELEASE_MODE", "rest, azureattestskr"),
        ({"SKR_RELEASE_ENC": "RSA_OAEP"}, "SKR_RELEASE_ENC", "CKM_RSA_AES_KEY_WRAP"),
        ({"SKR_EVENTS_TOPIC_ENDPOINT": "http://topic"}, "SKR_EVENTS_TOPIC_ENDPOINT", "https://"),
        ({"SKR_EVENTS_TOPIC_KEY": "k"}, "SKR_EVENTS_TOPIC_KEY", "SKR_EVENTS_TOPIC_ENDPOINT is not"),
        ({"SKR_DISABLE_KEY_ON_OFFBOARD": "maybe"}, "SKR_DISABLE_KEY_ON_OFFBOARD", "true or false"),
        ({"SKR_RECONCILE_SCHEDULE": "*/15 * * * *"}, "SKR_RECONCILE_SCHEDULE", "6 fields"),
        ({"SKR_ARM_ENDPOINT": "http://127.0.0.1:1"}, "SKR_ARM_ENDPOINT", "https://"),
        ({"SKR_CA_BUNDLE": "/nonexistent/ca.pem"}, "SKR_CA_BUNDLE", "not a readable file"),
        ({"SKR_SDK_RETRY_TOTAL": "11"}, "SKR_SDK_RETRY_TOTAL", "between 0 and 10"),
        ({"SKR_TASK_HUB": "skr-hub"}, "SKR_TASK_HUB", "3-45 letters and digits"),
        ({"SKR_TASK_HUB": "1hub"}, "SKR_TASK_HUB", "starting with a letter"),
        ({"AZURE_CLIENT_ID": "my-identity"}, "AZURE_CLIENT_ID", "GUID"),
    ],
)  # fmt: skip
def test_errors_name_the_variable(overrides: dict[str, str], variable: str, message: str) -> None:
    raised = error(**overrides)
    assert raised.variable == variable
    assert str(raised).startswith(f"{variable}: ")
    assert message in raised.problem


def test_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    wire = {
        "version": "1.0.0",
        "anyOf": [
            {
                "authority": MAA + "/",
                "allOf": [{"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"}],
            }
        ],
    }
    path.write_text(json.dumps(wire))
    settings = load(SKR_RELEASE_POLICY_FILE=str(path))
    assert settings.policy_source == "file" and settings.release_policy.to_json() == wire
    assert [w.split(": ")[0] for w in settings.warnings] == ["SKR_RELEASE_POLICY_FILE"]
    assert "no_attestation_type" in settings.warnings[0]


def test_policy_file_errors(tmp_path: Path) -> None:
    missing = error(SKR_RELEASE_POLICY_FILE=str(tmp_path / "nope.json"))
    assert missing.variable == "SKR_RELEASE_POLICY_FILE" and "cannot read" in missing.problem
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": "1.0.0", "anyOf": [{"authority": "http://maa", "allOf": []}]}))
    invalid = error(SKR_RELEASE_POLICY_FILE=str(bad))
    assert "anyOf[0].authority" in invalid.problem and "anyOf[0].allOf" in invalid.problem
    other = tmp_path / "other.json"
    other.write_text(json.dumps(build_policy("https://sharedeus2.eus2.attest.azure.net").to_json()))
    mismatch = error(SKR_RELEASE_POLICY_FILE=str(other))
    assert "no authority" in mismatch.problem and "SKR_MAA_ENDPOINT" in mismatch.problem


def test_claims_produce_policy_and_pitfall_warnings() -> None:
    claims = [{"claim": "x-ms-compliance-status", "equals": "azure-compliant-cvm"}]
    settings = load(SKR_RELEASE_CLAIMS=json.dumps(claims))
    assert settings.release_policy == build_policy(MAA, parse_conditions(claims))
    assert any("platform_claim_path" in w for w in settings.warnings)
    assert all(w.startswith("SKR_RELEASE_CLAIMS: ") for w in settings.warnings)


def test_unknown_skr_variables_are_warned_with_a_suggestion() -> None:
    settings = load(SKR_VAULT_URI="https://x", SKR_FROBNICATE="1", SKR_TWIN_PORT="1", OTHER="x")
    assert settings.warnings == (
        "SKR_FROBNICATE: unknown setting, ignored",
        "SKR_VAULT_URI: unknown setting, ignored (did you mean SKR_VAULT_URL?)",
    )


def test_scopes_are_deduplicated_case_insensitively() -> None:
    settings = load(
        SKR_SCOPES=f"/subscriptions/{SUB},/SUBSCRIPTIONS/{SUB.upper()}/, /subscriptions/{SUB2}/resourceGroups/RG"
    )
    assert [str(s) for s in settings.scopes] == [f"/subscriptions/{SUB}", f"/subscriptions/{SUB2}/resourceGroups/RG"]


def test_scope_guard_and_tag_filter() -> None:
    settings = load(
        SKR_SCOPES=f"/subscriptions/{SUB}/resourceGroups/rg-a,/subscriptions/{SUB2}", SKR_TAG_FILTER="SKR=on"
    )
    assert settings.in_scope(vm("RG-A"), {"skr": "on"})
    assert settings.in_scope(vm("anything", sub=SUB2), {"Skr": "on"})
    assert not settings.in_scope(vm("rg-b"), {"skr": "on"})
    assert not settings.in_scope(vm("rg-a"), {"skr": "ON"})  # values are case-sensitive
    assert not settings.in_scope(vm("rg-a"))
    assert load().in_scope(vm("any"))


def test_key_name_from_tag_or_template() -> None:
    settings = load()
    assert settings.key_name_for(vm(name="cvm-01")) == ("cvm-cvm-01", False)
    assert settings.key_name_for(vm(), {"SKR-KEY": " fleet-key "}) == ("fleet-key", True)
    assert settings.key_name_for(vm(), {"skr-key": ""}) == ("cvm-cvm-01", False)
    with pytest.raises(NamingError, match="tag 'skr-key' of VM"):
        settings.key_name_for(vm(), {"skr-key": "bad_key"})


@pytest.mark.parametrize(
    "expression",
    ["0 */15 * * * *", "0 0 2 * * sun", "*/10 5-10/2 0,12 1-31 jan-dec 1-5", "0 30 9 15 6 *", "59 59 23 31 12 6"],
)
def test_valid_ncrontab(expression: str) -> None:
    assert ncrontab_problem(expression) is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 */0 * * * *", "step '0'"),
        ("60 * * * * *", "60 is outside 0-59"),
        ("0 0 24 * * *", "hour field"),
        ("0 0 0 0 * *", "day field"),
        ("0 0 0 * 13 *", "month field"),
        ("0 0 0 * * 7", "day-of-week field"),
        ("0 0 0 * foo *", "'foo' is not a number"),
        ("0 10-5 * * * *", "runs backwards"),
        ("0 0 0 * * * *", "6 fields"),
    ],
)
def test_invalid_ncrontab(expression: str, message: str) -> None:
    problem = ncrontab_problem(expression)
    assert problem is not None and message in problem


def test_settings_model_is_frozen() -> None:
    settings: Any = load()
    with pytest.raises(ValueError, match="frozen"):
        settings.vault_url = "https://other"


def test_local_settings_example_is_valid() -> None:
    values = json.loads((Path(__file__).resolve().parents[2] / "local.settings.example.json").read_text())["Values"]
    settings = load_settings(values)
    assert settings.warnings == ()
    assert {name for name in values if name.startswith("SKR_")} <= set(KNOWN_VARIABLES)


VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv-skr"


def test_vault_resource_id() -> None:
    assert load().vault_resource_id is None
    settings = load(SKR_VAULT_RESOURCE_ID=VAULT_ID.upper().replace("SUBSCRIPTIONS", "subscriptions"))
    assert settings.vault_resource_id is not None and settings.vault_resource_id.name.lower() == "kv-skr"
    assert Settings.model_validate(settings.to_json()).vault_resource_id == settings.vault_resource_id
    # the twin's loopback vault URL cannot be checked against the name
    assert load(SKR_VAULT_URL="https://127.0.0.1:8443", SKR_VAULT_RESOURCE_ID=VAULT_ID).vault_resource_id is not None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            f"/subscriptions/{SUB}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/other-kv",
            "names vault 'other-kv'",
        ),
        (f"/subscriptions/{SUB}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/managedHSMs/kv-skr", "vaults"),
        ("kv-skr", "must start with '/'"),
    ],
)
def test_bad_vault_resource_id(value: str, message: str) -> None:
    raised = error(SKR_VAULT_RESOURCE_ID=value)
    assert raised.variable == "SKR_VAULT_RESOURCE_ID" and message in raised.problem
