"""Run the real Linux script inside a simulated VM of the twin, and scan what it leaves behind."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.keyvault.keys import KeyReleasePolicy
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

from localdev.twin.core import Twin
from localdev.twin.model import SimVm, TeeProfile
from localdev.twin.sandbox import hold_busy, prepare_sandbox
from localdev.twin.testing import key_client
from skr.release_report import parse_release_output
from tests.vm_scripts.helpers import LINUX_SCRIPT

RELEASE_ROLE = "08bbd89e-9f13-488c-ac41-acfcb10c90ab"
ENC_HASH = {"CKM_RSA_AES_KEY_WRAP": hashes.SHA1, "RSA_AES_KEY_WRAP_256": hashes.SHA256,
            "RSA_AES_KEY_WRAP_384": hashes.SHA384}


def cvm_policy(authority: str) -> bytes:
    """The documented guest-token policy: SEV-SNP and azure-compliant-cvm under x-ms-isolation-tee."""
    return json.dumps({"version": "1.0.0", "anyOf": [{"authority": authority, "allOf": [
        {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
        {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
    ]}]}).encode()


@dataclass
class Scenario:
    """A VM and a key in the twin, arranged for one script run."""

    twin: Twin
    vm: SimVm
    key_name: str
    workdir: Path

    @property
    def key_scope(self) -> str:
        return f"{self.twin.vault().resource_id}/keys/{self.key_name}"

    def grant_release(self, *, propagate: bool = False, scope: str | None = None) -> None:
        assert self.vm.principal_id
        self.twin.grant(self.vm.principal_id, RELEASE_ROLE, scope or self.key_scope, propagate=propagate)

    def private_der(self) -> bytes:
        key = self.twin.vault().keys[self.key_name.lower()].latest.private_key
        return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                                 serialization.NoEncryption())

    def release_calls(self) -> int:
        """Release requests Key Vault received from this VM's identity."""
        return self.twin.counters.get(caller=self.vm.principal_id, service="keyvault",
                                      operation="Microsoft.KeyVault/vaults/keys/release/action")

    def latest_version(self) -> str:
        return self.twin.vault().keys[self.key_name.lower()].latest.version


def arrange(twin: Twin, tmp_path: Path, *, tee: TeeProfile = TeeProfile.COMPLIANT_CVM, identity: bool = True,
            key: str | None = "rsa", authority: str | None = None, grant: bool = True) -> Scenario:
    """A VM, an exportable HSM key with the CVM policy (``key``: rsa | ec | plain | None) and the release role."""
    vm = twin.create_vm("vm-" + uuid.uuid4().hex[:8], tee=tee, identity=identity, emit_event=False)
    scenario = Scenario(twin, vm, "key-" + uuid.uuid4().hex[:8], tmp_path / "vm")
    client = key_client(twin)
    policy = KeyReleasePolicy(cvm_policy(authority or twin.urls.maa))
    if key == "rsa":
        client.create_rsa_key(scenario.key_name, hardware_protected=True, exportable=True, release_policy=policy)
    elif key == "ec":
        client.create_ec_key(scenario.key_name, hardware_protected=True, exportable=True, release_policy=policy)
    elif key == "plain":
        client.create_rsa_key(scenario.key_name, hardware_protected=True)
    if grant and identity:
        scenario.grant_release()
    return scenario


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    result: dict[str, Any]
    env: dict[str, str]
    before: set[Path]
    workdir: Path

    @property
    def summary(self) -> tuple[int, str, str | None, int | None]:
        """(exit code, outcome, error_code, http_status)."""
        return self.code, self.result["outcome"], self.result["error_code"], self.result["http_status"]

    @property
    def stored(self) -> Path:
        return Path(self.env["SKR_OUTPUT_PATH"])

    def new_files(self) -> set[Path]:
        return {p for p in self.workdir.rglob("*") if p.is_file()} - self.before


def run_script(scenario: Scenario, *, interpreter: str | None = None, **params: str | None) -> Run:
    """Run vm_scripts/linux/skr_release.py in the scenario's VM sandbox; ``params`` override SKR_* values."""
    twin = scenario.twin
    python = interpreter or sys.executable
    env = prepare_sandbox(twin, scenario.vm, scenario.workdir, interpreter=python)
    env.update(SKR_VAULT_URL=twin.vault().url, SKR_KEY_NAME=scenario.key_name, SKR_MAA_ENDPOINT=twin.urls.maa,
               SKR_RETRY_WINDOW_SECONDS="30")
    for name, value in params.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    before = {p for p in scenario.workdir.rglob("*") if p.is_file()}
    with hold_busy(twin, env):
        proc = subprocess.run([python, str(LINUX_SCRIPT)], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and proc.stdout.endswith("\n"), proc.stdout + proc.stderr
    assert lines[0].startswith("SKR-RESULT ") and len(lines[0].encode()) <= 1024
    result = json.loads(lines[0].removeprefix("SKR-RESULT "))
    assert result["exit_code"] == proc.returncode
    assert result["retryable"] is (proc.returncode == 2)
    # the orchestrator's parser (skr/release_report.py) reads the same line the same way
    report = parse_release_output(proc.stdout + proc.stderr)
    assert (report.outcome, report.key_id, report.key_thumbprint, report.http_status, report.error_code,
            report.attempts, report.exit_code) == (result["outcome"], result["key_id"], result["key_thumbprint"],
                                                   result["http_status"], result["error_code"], result["attempts"],
                                                   result["exit_code"])
    return Run(proc.returncode, proc.stdout, proc.stderr, result, env, before, scenario.workdir)


def encodings(data: bytes) -> list[str]:
    """Text forms a byte string could leak in."""
    return [data.hex(), base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode().rstrip("=")]


def assert_no_secrets(run: Run, scenario: Scenario) -> None:
    """No token, JWS or key byte in stdout/stderr or in any file the script wrote except the JWS."""
    output = run.stdout + run.stderr
    assert "eyJ" not in output  # every JWT / JWS (MAA token, access token, release JWS) starts so
    secrets: list[str] = []
    if scenario.key_name.lower() in scenario.twin.vault().keys:
        secrets += [s[:48] for s in encodings(scenario.private_der()[40:])]
        secrets += [s[:48] for s in encodings(scenario.private_der())]
    if run.stored.exists():
        jws = run.stored.read_text()
        secrets += jws.split(".")
        payload = json.loads(base64.urlsafe_b64decode(jws.split(".")[1] + "=="))
        key_hsm = payload["response"]["key"]["key"]["key_hsm"]
        secrets.append(key_hsm[:64])
        secrets.append(json.loads(base64.urlsafe_b64decode(key_hsm + "=="))["ciphertext"][:64])
    for secret in secrets:
        assert secret not in output
    for path in run.new_files() - {run.stored}:
        content = path.read_bytes()
        assert b"eyJ" not in content, path
        for secret in secrets:
            assert secret.encode() not in content, path
    keys_dir = run.stored.parent
    if keys_dir.exists():
        assert sorted(os.listdir(keys_dir)) == (["released.jws"] if run.stored.exists() else []), "temp file left"


def unwrap_stored(run: Run, scenario: Scenario) -> tuple[dict[str, Any], bytes]:
    """The stored JWS payload and the key material the VM's vTPM key unwraps from its key_hsm."""
    jws = run.stored.read_text()
    payload = json.loads(base64.urlsafe_b64decode(jws.split(".")[1] + "=="))
    blob = json.loads(base64.urlsafe_b64decode(payload["response"]["key"]["key"]["key_hsm"] + "=="))
    ciphertext = base64.urlsafe_b64decode(blob["ciphertext"] + "==")
    hash_type = ENC_HASH[blob["header"]["enc"]]
    aes_key = scenario.vm.vtpm_key.decrypt(ciphertext[:256], padding.OAEP(padding.MGF1(hash_type()), hash_type(), None))
    return payload, aes_key_unwrap_with_padding(aes_key, ciphertext[256:])
