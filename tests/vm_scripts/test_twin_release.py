"""The real Linux script in a subprocess, inside simulated VMs of the Azure twin (virtual clock).

Every run asserts the single result line, the exit code, and that no token, JWS or key byte
appears in its output or in any file except the stored JWS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from joserfc.jwk import ECKey, RSAKey

from localdev.twin.model import TeeProfile
from tests.vm_scripts.helpers import PYTHON38
from tests.vm_scripts.twinrun import arrange, assert_no_secrets, run_script, unwrap_stored


@pytest.fixture
def twin(twin_factory, virtual_clock):
    """Twin on a virtual clock; RBAC grants made with propagate=True take 30 s to take effect."""
    return twin_factory(clock=virtual_clock, propagation="fixed:30")


# ---------------------------------------------------------------------------------- released
@pytest.mark.parametrize("enc", ["CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_256", "RSA_AES_KEY_WRAP_384"])
def test_released_rest_for_each_enc(twin, tmp_path, enc):
    scenario = arrange(twin, tmp_path)
    run = run_script(scenario, SKR_ENC=enc)
    assert run.code == 0, run.stdout + run.stderr
    version = scenario.latest_version()
    expected_kid = f"{twin.vault().url}/keys/{scenario.key_name}/{version}"
    public = twin.vault().keys[scenario.key_name.lower()].latest.private_key.public_key()
    assert run.result == {
        "schema": 1, "outcome": "released", "exit_code": 0, "retryable": False, "mode": "rest",
        "key_id": expected_kid, "key_thumbprint": RSAKey.import_key(public).thumbprint(), "kty": "RSA-HSM",
        "enc": enc, "http_status": 200, "error_code": None, "message": None, "attempts": 1,
        "elapsed_seconds": run.result["elapsed_seconds"], "stored_path": str(run.stored),
        "stored_sha256": hashlib.sha256(run.stored.read_bytes()).hexdigest(), "script_version": "1.0",
    }
    # root-only storage, and the stored JWS is what the workload needs: its vTPM key unwraps the key
    assert stat.S_IMODE(os.stat(run.stored.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(run.stored).st_mode) == 0o600
    payload, material = unwrap_stored(run, scenario)
    assert payload["request"]["enc"] == enc
    assert material == scenario.private_der()
    assert_no_secrets(run, scenario)


def test_released_under_python38_with_a_pinned_version(twin, tmp_path):
    assert PYTHON38.exists()
    scenario = arrange(twin, tmp_path, key="ec")
    version = scenario.latest_version()
    run = run_script(scenario, interpreter=str(PYTHON38), SKR_KEY_VERSION=version)
    assert run.code == 0, run.stdout + run.stderr
    public = twin.vault().keys[scenario.key_name.lower()].latest.private_key.public_key()
    assert run.result["key_id"].endswith(f"/keys/{scenario.key_name}/{version}")
    assert run.result["kty"] == "EC-HSM"
    assert run.result["key_thumbprint"] == ECKey.import_key(public).thumbprint()
    assert unwrap_stored(run, scenario)[1] == scenario.private_der()
    assert_no_secrets(run, scenario)


def test_released_after_rbac_propagates_inside_the_window(twin, tmp_path):
    scenario = arrange(twin, tmp_path, grant=False)
    scenario.grant_release(propagate=True)  # effective 30 s (virtual) from now
    run = run_script(scenario, SKR_RETRY_WINDOW_SECONDS="90")
    assert run.result["outcome"] == "released", run.stderr
    # 403 at t=0, 2, 6, 14, 24, then 200 at 34 s: the script retried with its backoff schedule
    assert run.result["attempts"] == 6 == scenario.release_calls()
    assert 30 <= run.result["elapsed_seconds"] < 40
    assert run.stderr.count("forbidden_by_rbac (ForbiddenByRbac); retrying") == 5
    assert_no_secrets(run, scenario)


def test_released_with_azureattestskr(twin, tmp_path):
    scenario = arrange(twin, tmp_path)
    run = run_script(scenario, SKR_MODE="azureattestskr")
    assert run.code == 0, run.stdout + run.stderr
    assert run.result["outcome"] == "released" and run.result["mode"] == "azureattestskr"
    assert run.result["attempts"] == 1 == scenario.release_calls()
    assert run.result["key_id"] == f"{twin.vault().url}/keys/{scenario.key_name}"
    assert run.result["key_thumbprint"] is None and run.result["stored_path"] is None
    assert not run.stored.exists()  # the tool keeps nothing
    assert_no_secrets(run, scenario)


# ------------------------------------------------------------------------- forbidden_by_rbac
@pytest.mark.parametrize("mode", ["rest", "azureattestskr"])
def test_forbidden_by_rbac_after_the_window(twin, tmp_path, mode):
    scenario = arrange(twin, tmp_path, grant=False)
    run = run_script(scenario, SKR_MODE=mode, SKR_RETRY_WINDOW_SECONDS="20")
    assert run.code == 2
    assert run.result["outcome"] == "forbidden_by_rbac" and run.result["error_code"] == "ForbiddenByRbac"
    assert run.result["http_status"] == 403 and run.result["retryable"] is True
    assert run.result["attempts"] == 5 == scenario.release_calls()  # t = 0, 2, 6, 14, 20 (last wait cut)
    assert 20 <= run.result["elapsed_seconds"] < 25
    assert not run.stored.exists()
    assert_no_secrets(run, scenario)


# --------------------------------------------------------------------------- policy / attestation
@pytest.mark.parametrize("mode", ["rest", "azureattestskr"])
def test_policy_denied_for_a_noncompliant_cvm(twin, tmp_path, mode):
    scenario = arrange(twin, tmp_path, tee=TeeProfile.NONCOMPLIANT_CVM)
    run = run_script(scenario, SKR_MODE=mode)
    assert run.code == 3
    assert run.result["outcome"] == "policy_denied" and run.result["http_status"] == 403
    assert "x-ms-isolation-tee.x-ms-compliance-status" in run.result["message"]  # names the unmet claim
    assert run.result["attempts"] == 1
    assert_no_secrets(run, scenario)


@pytest.mark.parametrize("mode", ["rest", "azureattestskr"])
def test_attestation_failed_without_a_vtpm(twin, tmp_path, mode):
    scenario = arrange(twin, tmp_path, tee=TeeProfile.PLAIN)
    run = run_script(scenario, SKR_MODE=mode)
    assert run.code == 3 and run.result["outcome"] == "attestation_failed"
    if mode == "rest":  # AttestationClient printed its error on stdout and exited 0
        assert run.result["error_code"] == "not_a_token"
        assert "vTPM" in run.result["message"] and run.result["attempts"] == 0
    else:
        assert run.result["error_code"] == "maa_failed"
    assert_no_secrets(run, scenario)


def test_attestation_failed_when_maa_is_down(twin, tmp_path):
    scenario = arrange(twin, tmp_path)
    twin.faults.add("maa_outage")
    run = run_script(scenario)
    assert run.code == 3
    assert (run.result["outcome"], run.result["error_code"]) == ("attestation_failed", "not_a_token")
    assert "503" in run.result["message"]
    assert_no_secrets(run, scenario)


def test_attestation_failed_when_the_command_prints_an_error(twin, tmp_path):
    scenario = arrange(twin, tmp_path)
    run = run_script(scenario, SKR_ATTESTATION_COMMAND="echo Error: AK cert provisioning is pending {maa}")
    assert (run.result["outcome"], run.result["error_code"]) == ("attestation_failed", "not_a_token")
    assert run.result["message"].endswith(f"AK cert provisioning is pending {twin.urls.maa}")
    missing = run_script(scenario, SKR_ATTESTATION_COMMAND="NoSuchAttestationClient -a {maa}")
    assert (missing.result["outcome"], missing.result["error_code"]) == ("attestation_failed", "tool_not_found")
    failing = run_script(scenario, SKR_ATTESTATION_COMMAND="sh -c 'exit 7'")
    assert failing.result["error_code"] == "tool_exit_7"
    for each in (run, missing, failing):
        assert each.code == 3
        assert_no_secrets(each, scenario)


def test_attestation_failed_when_key_vault_cannot_verify_the_token(twin, tmp_path):
    """The key's policy names another authority: Key Vault rejects the token itself (not the claims)."""
    scenario = arrange(twin, tmp_path, authority="https://sharedweu.weu.attest.azure.net")
    run = run_script(scenario)
    assert run.summary == (3, "attestation_failed", "AccessDenied", 403)
    assert "cannot be verified" in run.result["message"]
    assert_no_secrets(run, scenario)


# ------------------------------------------------------------------------ key problems
@pytest.mark.parametrize("mode", ["rest", "azureattestskr"])
def test_key_not_found(twin, tmp_path, mode):
    scenario = arrange(twin, tmp_path, key=None, grant=False)
    scenario.grant_release(scope=twin.vault().resource_id)  # RBAC passes, so Key Vault looks the key up
    run = run_script(scenario, SKR_MODE=mode)
    assert run.summary == (3, "key_not_found", "KeyNotFound", 404)
    assert_no_secrets(run, scenario)


@pytest.mark.parametrize("mode", ["rest", "azureattestskr"])
def test_not_exportable(twin, tmp_path, mode):
    scenario = arrange(twin, tmp_path, key="plain")
    run = run_script(scenario, SKR_MODE=mode)
    assert run.summary == (3, "not_exportable", "BadParameter", 400)
    assert_no_secrets(run, scenario)


# ---------------------------------------------------------------------------------- IMDS
@pytest.mark.parametrize("mode", ["rest", "azureattestskr"])
def test_imds_failed_without_an_identity(twin, tmp_path, mode):
    scenario = arrange(twin, tmp_path, identity=False)
    run = run_script(scenario, SKR_MODE=mode)
    assert run.code == 2 and run.result["outcome"] == "imds_failed"
    if mode == "rest":
        assert (run.result["error_code"], run.result["http_status"]) == ("invalid_request", 400)
        assert "Identity not found" in run.result["message"]
        assert "IMDS HTTP" not in run.stderr  # a 400 is not retried
    else:
        assert run.result["error_code"] == "token_failed"
    assert_no_secrets(run, scenario)


@pytest.mark.parametrize("mode", ["rest", "azureattestskr"])
def test_user_assigned_identity_selector_reaches_imds(twin, tmp_path, mode):
    """SKR_IMDS_CLIENT_ID is IMDS's client_id (rest) and AzureAttestSKR's IMDS_CLIENT_ID."""
    scenario = arrange(twin, tmp_path)
    principal = twin.principal(scenario.vm.principal_id)
    assert principal is not None
    wrong = run_script(scenario, SKR_MODE=mode, SKR_IMDS_CLIENT_ID="00000000-0000-0000-0000-000000000001")
    assert wrong.summary[:2] == (2, "imds_failed")
    right = run_script(scenario, SKR_MODE=mode, SKR_IMDS_CLIENT_ID=principal.app_id)
    assert right.summary[:2] == (0, "released")
    for run in (wrong, right):
        assert_no_secrets(run, scenario)


def test_imds_failed_after_retrying_transient_errors(twin, tmp_path):
    scenario = arrange(twin, tmp_path)
    twin.faults.add("imds_error", status=503, vm=scenario.vm.resource_id)
    run = run_script(scenario)
    assert run.code == 2
    assert (run.result["outcome"], run.result["http_status"]) == ("imds_failed", 503)
    assert run.stderr.count("IMDS HTTP 503, retrying") == 4  # 5 tries, 1/2/4/8 s apart
    assert 15 <= run.result["elapsed_seconds"] < 20
    assert_no_secrets(run, scenario)


def test_imds_transient_errors_are_retried_to_success(twin, tmp_path):
    scenario = arrange(twin, tmp_path)
    twin.faults.add("imds_error", status=410, count=2, vm=scenario.vm.resource_id)
    run = run_script(scenario)
    assert run.result["outcome"] == "released"
    assert run.stderr.count("IMDS HTTP 410, retrying") == 2
    assert_no_secrets(run, scenario)


# ------------------------------------------------------------------------------ http_error
@pytest.mark.parametrize("mode", ["rest", "azureattestskr"])
def test_http_error_retryable_when_key_vault_is_down(twin, tmp_path, mode):
    scenario = arrange(twin, tmp_path)
    twin.faults.add("kv_outage", path=scenario.key_name)
    run = run_script(scenario, SKR_MODE=mode, SKR_RETRY_WINDOW_SECONDS="10")
    assert run.summary == (2, "http_error", "ServiceUnavailable", 503)
    assert run.result["attempts"] == 4  # t = 0, 2, 6, 10
    assert_no_secrets(run, scenario)


def test_http_error_recovers_inside_the_window(twin, tmp_path):
    scenario = arrange(twin, tmp_path)
    twin.faults.add("kv_outage", path=scenario.key_name, count=2)
    run = run_script(scenario)
    assert run.result["outcome"] == "released" and run.result["attempts"] == 3
    assert_no_secrets(run, scenario)


def test_http_error_terminal_for_a_token_of_the_wrong_audience(twin, tmp_path):
    scenario = arrange(twin, tmp_path)
    run = run_script(scenario, SKR_IMDS_RESOURCE="https://management.azure.com")
    assert run.code == 3
    assert (run.result["outcome"], run.result["http_status"], run.result["error_code"]) \
        == ("http_error", 401, "Unauthorized")
    assert_no_secrets(run, scenario)


def test_http_error_for_an_unreachable_vault_and_an_untrusted_tls_certificate(twin, tmp_path):
    scenario = arrange(twin, tmp_path)
    closed = run_script(scenario, SKR_VAULT_URL="https://127.0.0.1:9", SKR_RETRY_WINDOW_SECONDS="4")
    assert closed.code == 2
    assert (closed.result["outcome"], closed.result["error_code"]) == ("http_error", "connection_error")
    assert closed.result["attempts"] == 3  # t = 0, 2, 4
    # without SKR_CA_BUNDLE the script trusts the OS store only, which does not know the twin CA
    untrusted = run_script(scenario, SKR_CA_BUNDLE=None)
    assert untrusted.code == 3
    assert (untrusted.result["outcome"], untrusted.result["error_code"]) == ("http_error", "tls_verify_failed")
    for run in (closed, untrusted):
        assert_no_secrets(run, scenario)


# ------------------------------------------------------------------------------- jws_invalid
@pytest.mark.parametrize(("fault", "code"), [("release_bad_signature", "jws_bad_signature"),
                                             ("release_untrusted_chain", "jws_untrusted_chain")])
def test_jws_invalid_is_not_stored(twin, tmp_path, fault, code):
    scenario = arrange(twin, tmp_path)
    twin.faults.add(fault, vm=scenario.vm.resource_id)
    run = run_script(scenario)
    assert run.summary == (3, "jws_invalid", code, 200)
    assert not run.stored.exists() and run.result["stored_path"] is None
    assert_no_secrets(run, scenario)


def test_a_multi_certificate_bundle_is_read_whole(twin, tmp_path):
    """Trust anchors come from every certificate of SKR_CA_BUNDLE (here the twin CA after public roots)."""
    scenario = arrange(twin, tmp_path)
    bundle = tmp_path / "bundle.pem"
    public = next((p for p in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
                   if os.path.exists(p)), None)
    assert public is not None
    bundle.write_bytes(Path(public).read_bytes() + Path(twin.ca_bundle_path).read_bytes())
    run = run_script(scenario, SKR_CA_BUNDLE=str(bundle))
    assert run.result["outcome"] == "released"
    assert_no_secrets(run, scenario)


# ------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(("params", "code", "name"), [
    ({"SKR_KEY_NAME": None}, "missing_parameter", "SKR_KEY_NAME"),
    ({"SKR_MAA_ENDPOINT": ""}, "missing_parameter", "SKR_MAA_ENDPOINT"),
    ({"SKR_VAULT_URL": "https://vault with spaces"}, "invalid_parameter", "SKR_VAULT_URL"),
    ({"SKR_VAULT_URL": "http://127.0.0.1:1/keys"}, "invalid_parameter", "SKR_VAULT_URL"),
    ({"SKR_ENC": "RSA_OAEP"}, "invalid_parameter", "SKR_ENC"),
    ({"SKR_MODE": "sidecar"}, "invalid_parameter", "SKR_MODE"),
])
def test_invalid_parameters_change_nothing(twin, tmp_path, params, code, name):
    scenario = arrange(twin, tmp_path)
    before = twin.counters.rows()
    run = run_script(scenario, **params)
    assert run.code == 3
    assert (run.result["outcome"], run.result["error_code"]) == ("invalid_parameters", code)
    assert run.result["message"].startswith(name + ": ") and run.result["attempts"] == 0
    assert not run.stored.parent.exists()
    assert twin.counters.rows() == before  # no call reached the twin (IMDS, MAA, Key Vault)
    assert_no_secrets(run, scenario)


def test_output_directory_must_be_private(twin, tmp_path):
    scenario = arrange(twin, tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    run = run_script(scenario, SKR_OUTPUT_PATH=str(shared / "k.jws"))
    assert (run.result["outcome"], run.result["error_code"]) == ("invalid_parameters", "output_dir_not_private")
    assert run.result["attempts"] == 0 and not (shared / "k.jws").exists()
    assert_no_secrets(run, scenario)


def test_internal_error_when_the_jws_cannot_be_stored(twin, tmp_path):
    scenario = arrange(twin, tmp_path)
    target = scenario.workdir / "keys" / "released.jws"
    target.mkdir(parents=True)  # a directory where the file should go
    target.parent.chmod(0o700)
    run = run_script(scenario, SKR_OUTPUT_PATH=str(target))
    assert run.code == 3
    assert (run.result["outcome"], run.result["error_code"]) == ("internal_error", "store_failed")
    assert sorted(os.listdir(target.parent)) == ["released.jws"] and target.is_dir()  # no temp file left
    assert "eyJ" not in run.stdout + run.stderr
    assert not any(p.is_file() for p in target.parent.rglob("*"))


def test_result_payload_is_parsable_and_carries_no_jws_fragments(twin, tmp_path):
    scenario = arrange(twin, tmp_path)
    run = run_script(scenario)
    jws = run.stored.read_text()
    header = json.loads(base64.urlsafe_b64decode(jws.split(".")[0] + "=="))
    for cert in header["x5c"]:
        assert cert[:40] not in run.stdout + run.stderr
    assert set(run.result) == {"schema", "outcome", "exit_code", "retryable", "mode", "key_id", "key_thumbprint",
                               "kty", "enc", "http_status", "error_code", "message", "attempts",
                               "elapsed_seconds", "stored_path", "stored_sha256", "script_version"}
