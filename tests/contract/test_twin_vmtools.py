"""The in-VM tools (AttestationClient, AzureAttestSKR stand-ins) and the VM sandbox with its clock."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from localdev.clock import VirtualClock
from localdev.twin.core import Twin
from localdev.twin.maa import signer_for
from localdev.twin.model import TeeProfile
from localdev.twin.sandbox import prepare_sandbox
from tests.contract._twin_skr_support import (
    PY38,
    exportable_key,
    grant_release,
    jwt_parts,
    new_vm,
    run_in_vm,
)

INTERPRETERS = [sys.executable, PY38]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("python", INTERPRETERS)
def test_attestation_client_prints_the_token(twin: Twin, tmp_path: Path, python: str) -> None:
    vm = new_vm(twin)
    run = run_in_vm(twin, vm, tmp_path, ["AttestationClient", "-a", twin.urls.maa + "/", "-n", "abc", "-o", "token"],
                    interpreter=python)
    assert run.returncode == 0 and run.stderr == ""
    token = run.stdout.strip()
    assert run.stdout.count("\n") == 1 and token.startswith("eyJ")
    _, claims = jwt_parts(token)
    assert claims["x-ms-runtime"]["client-payload"] == {"nonce": "abc"}
    assert claims["x-ms-azurevm-vmid"] == vm.vm_id.upper()


@pytest.mark.parametrize(("tee", "expected"), [(TeeProfile.COMPLIANT_CVM, "true"),
                                               (TeeProfile.NONCOMPLIANT_CVM, "false"),
                                               (TeeProfile.TRUSTED_LAUNCH, "false")])
def test_attestation_client_bool_output(twin: Twin, tmp_path: Path, tee: TeeProfile, expected: str) -> None:
    run = run_in_vm(twin, new_vm(twin, tee), tmp_path, ["AttestationClient", "-a", twin.urls.maa, "-o", "bool"])
    assert (run.returncode, run.stdout) == (0, expected + "\n")


@pytest.mark.parametrize("case", ["plain-vm", "unreachable-maa"])
def test_attestation_failures_print_an_error_and_exit_zero(twin: Twin, tmp_path: Path, case: str) -> None:
    vm = new_vm(twin, TeeProfile.PLAIN if case == "plain-vm" else TeeProfile.COMPLIANT_CVM)
    maa = twin.urls.maa if case == "plain-vm" else f"https://127.0.0.1:{_closed_port()}"
    run = run_in_vm(twin, vm, tmp_path, ["AttestationClient", "-a", maa, "-o", "token"])
    assert run.returncode == 0
    assert run.stdout.startswith("Failed to attest the guest:") and "eyJ" not in run.stdout


def test_attestation_client_retries_an_outage_on_the_virtual_clock(twin_factory: Callable[..., Twin],
                                                                   virtual_clock: VirtualClock,
                                                                   tmp_path: Path) -> None:
    twin = twin_factory(clock=virtual_clock)
    vm = new_vm(twin)
    outage = twin.faults.add("maa_outage", count=3)
    start, real_start = virtual_clock.time(), time.monotonic()
    run = run_in_vm(twin, vm, tmp_path, ["AttestationClient", "-a", twin.urls.maa, "-o", "token"])
    assert run.returncode == 0 and run.stdout.startswith("eyJ"), run.stdout + run.stderr
    assert outage.hits == 3
    assert virtual_clock.time() - start == pytest.approx(2 + 4 + 8)  # back-off slept on the twin clock
    assert time.monotonic() - real_start < 10


def test_attestation_client_usage_error(twin: Twin, tmp_path: Path) -> None:
    run = run_in_vm(twin, new_vm(twin), tmp_path, ["AttestationClient", "-x"])
    assert run.returncode == 1 and "Usage: AttestationClient" in run.stdout


@pytest.mark.parametrize("python", INTERPRETERS)
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_azure_attest_skr_releases(twin: Twin, tmp_path: Path, python: str, kind: str) -> None:
    vm = new_vm(twin)
    name = exportable_key(twin, kind=kind)
    grant_release(twin, vm, name)
    run = run_in_vm(twin, vm, tmp_path, ["AzureAttestSKR", "-a", twin.urls.maa, "-k",
                                         f"{twin.vault().url}/keys/{name}", "-c", "imds", "-r"], interpreter=python)
    assert (run.returncode, run.stdout) == (0, "")
    assert run.stderr == f"Released key type: {kind.upper()}\n"


def test_azure_attest_skr_exit_codes(twin: Twin, tmp_path: Path) -> None:
    name = exportable_key(twin)
    key_url = f"{twin.vault().url}/keys/{name}"
    no_role = new_vm(twin)
    run = run_in_vm(twin, no_role, tmp_path / "a", ["AzureAttestSKR", "-a", twin.urls.maa, "-k", key_url, "-r"])
    assert run.returncode == 4
    prefix = "SKR HTTP request failed: HTTP 403: "
    assert run.stderr.startswith(prefix)
    assert json.loads(run.stderr[len(prefix):])["error"]["innererror"]["code"] == "ForbiddenByRbac"

    no_identity = new_vm(twin, identity=False)
    run = run_in_vm(twin, no_identity, tmp_path / "b", ["AzureAttestSKR", "-a", twin.urls.maa, "-k", key_url, "-r"])
    assert run.returncode == 3 and "Identity not found" in run.stderr

    plain = new_vm(twin, TeeProfile.PLAIN)
    run = run_in_vm(twin, plain, tmp_path / "c", ["AzureAttestSKR", "-a", twin.urls.maa, "-k", key_url, "-r"])
    assert run.returncode == 2 and run.stderr.startswith("Attestation failed:")

    granted = new_vm(twin)
    grant_release(twin, granted, name)
    closed = f"https://127.0.0.1:{_closed_port()}/keys/{name}"
    run = run_in_vm(twin, granted, tmp_path / "d", ["AzureAttestSKR", "-a", twin.urls.maa, "-k", closed, "-r"])
    assert run.returncode == 6 and "transport error" in run.stderr
    run = run_in_vm(twin, granted, tmp_path / "e", ["AzureAttestSKR", "-a", twin.urls.maa, "-k", key_url, "-c", "sp",
                                                    "-r"])
    assert run.returncode == 3
    for argv in (["-k", key_url], ["-r"], ["-k", key_url, "-r", "-w"]):
        run = run_in_vm(twin, granted, tmp_path / "f", ["AzureAttestSKR", *argv])
        assert run.returncode == 1 and "Usage: AzureAttestSKR" in run.stderr
    for run_output in (run.stdout,):
        assert "eyJ" not in run_output


def test_sandbox_environment_is_the_vms_own(twin: Twin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "app-secret")
    vm = new_vm(twin)
    env = prepare_sandbox(twin, vm, tmp_path)
    assert "IDENTITY_HEADER" not in env and "IDENTITY_ENDPOINT" not in env
    assert env["PATH"].split(":")[0] == str(tmp_path / "bin")
    assert env["SKR_CA_BUNDLE"] == twin.ca_bundle_path
    assert env["SKR_OUTPUT_PATH"] == str(tmp_path / "keys" / "released.jws")
    secret = signer_for(twin).vm_secret(vm.vm_id)
    assert all(secret not in value for value in env.values())
    config = tmp_path / ".vtpm" / "vm.json"
    assert oct(config.stat().st_mode & 0o777) == "0o600" and json.loads(config.read_text())["secret"] == secret
    assert "PYTHONPATH" not in env  # real clock: no time hooks
    run = run_in_vm(twin, vm, tmp_path, ["python3", "-c", "import sys; print(sys.executable)"], interpreter=PY38)
    assert run.stdout.strip().endswith("python3.8")


@pytest.mark.parametrize("python", INTERPRETERS)
def test_scripts_sleep_on_the_virtual_clock(twin_factory: Callable[..., Twin], virtual_clock: VirtualClock,
                                            tmp_path: Path, python: str) -> None:
    twin = twin_factory(clock=virtual_clock)
    vm = new_vm(twin)
    script = ("import time; t0, m0 = time.time(), time.monotonic(); time.sleep(3600); "
              "print(round(time.time() - t0), round(time.monotonic() - m0))")
    before, real_start = virtual_clock.time(), time.monotonic()
    run = run_in_vm(twin, vm, tmp_path, ["python3", "-c", script], interpreter=python)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["3600", "3600"]
    assert virtual_clock.time() - before == pytest.approx(3600)
    assert time.monotonic() - real_start < 10
