"""The twin as a whole: start-up info, the CLI's first line, TLS, the admin API, and its independence from skr."""

from __future__ import annotations

import ast
import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from localdev.clock import VirtualClock
from localdev.twin.core import Twin, TwinConfig
from localdev.twin.model import TeeProfile
from localdev.twin.testing import admin_client

ROOT = Path(__file__).resolve().parents[2]
INFO_KEYS = {"arm_url", "subscription_id", "tenant_id", "vaults", "maa_url", "identity_endpoint", "identity_header",
             "events_topic_url", "admin_url", "ca_bundle"}


def test_info_names_every_endpoint_and_defaults(twin: Twin) -> None:
    info = twin.info
    assert set(info) >= INFO_KEYS
    assert list(info["vaults"]) == ["skr-vault"]
    assert info["vaults"]["skr-vault"].startswith("https://127.0.0.1:")
    for key in ("arm_url", "maa_url", "events_topic_url", "admin_url"):
        assert info[key].startswith("https://127.0.0.1:"), key
    assert info["identity_endpoint"].startswith("http://127.0.0.1:")
    assert twin.vault().sku == "premium"
    assert Path(info["ca_bundle"]).read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_ids_derive_from_seed_and_config_is_validated() -> None:
    assert TwinConfig(seed=7).subscription_id == TwinConfig(seed=7).subscription_id
    assert TwinConfig(seed=7).subscription_id != TwinConfig(seed=8).subscription_id
    with pytest.raises(ValueError, match="at least one vault"):
        TwinConfig(vault_names=())
    with pytest.raises(ValueError, match="bad propagation spec"):
        TwinConfig(propagation="gaussian:3")


def test_tls_certificate_covers_loopback_and_verifies_with_the_ca(twin: Twin) -> None:
    context = ssl.create_default_context(cafile=twin.ca_bundle_path)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    for host in ("127.0.0.1", "localhost"):
        url = twin.urls.admin.replace("127.0.0.1", host) + "/admin/info"
        assert httpx.get(url, verify=context).status_code == 200
    san = twin.tls.server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(twin.urls.admin + "/admin/info")  # not in the default trust store


def test_issue_cert_builds_a_chain_other_services_can_sign_with(twin: Twin) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = twin.tls.issue_cert("twin release signer", key.public_key())
    leaf.verify_directly_issued_by(twin.tls.ca_cert)
    assert twin.tls.ca_der_b64


def test_two_twins_run_side_by_side_on_distinct_ports(twin: Twin, twin_factory) -> None:
    other = twin_factory(seed=1)
    assert other.urls.arm != twin.urls.arm
    assert other.config.subscription_id != twin.config.subscription_id


def test_python_admin_api_creates_and_deletes_vms(twin: Twin) -> None:
    vm = twin.create_vm("cvm-a", tee=TeeProfile.NONCOMPLIANT_CVM, tags={"team": "x"})
    assert twin.find_vm(vm.resource_id.upper()) is vm
    assert twin.find_vm(vm_id=vm.vm_id) is vm
    assert twin.find_vm(principal_id=vm.principal_id) is vm
    assert twin.principal(vm.principal_id).vm_resource_id == vm.resource_id
    with pytest.raises(ValueError, match="already exists"):
        twin.create_vm("cvm-a")
    twin.delete_vm(vm.resource_id)
    assert twin.find_vm(vm.resource_id) is None
    assert vm.deleted and twin.principal(vm.principal_id) is None
    assert twin.delete_vm(vm.resource_id) is None


def test_admin_http_api(twin: Twin) -> None:
    with admin_client(twin) as admin:
        assert admin.get("/admin/info").json()["arm_url"] == twin.urls.arm
        created = admin.post("/admin/vms", json={"name": "web-1", "tee": "trusted_launch", "tags": {"a": "1"}})
        assert created.status_code == 201 and created.json()["tee"] == "trusted_launch"
        assert admin.get(f"/admin/vms/{created.json()['vm_id']}").json()["name"] == "web-1"
        assert [v["name"] for v in admin.get("/admin/vms").json()["value"]] == ["web-1"]
        assert admin.post("/admin/vms", json={"name": "bad", "tee": "sgx"}).status_code == 400
        assert admin.post("/admin/vms", json={}).json() == {"error": "'name' is required"}
        user = admin.post("/admin/principals", json={"display_name": "alice", "principal_type": "User"}).json()
        assert user["principal_type"] == "User"
        grant = admin.post("/admin/grants", json={"principal_id": user["object_id"], "role": "Reader",
                                                  "scope": f"/subscriptions/{twin.config.subscription_id}"})
        assert grant.status_code == 201
        check = admin.get("/admin/rbac/check", params={
            "principal_id": user["object_id"], "action": "Microsoft.Compute/virtualMachines/read",
            "scope": created.json()["resource_id"]}).json()
        assert check["allowed"] is True and "Reader" in check["reason"]
        assert admin.post("/admin/grants", json={"principal_id": "x", "role": "Nope", "scope": "/"}).status_code == 400
        token = admin.post("/admin/tokens", json={"principal_id": user["object_id"]}).json()["access_token"]
        assert twin.identity.verify(token, "https://management.azure.com/").object_id == user["object_id"]
        assert admin.put("/admin/propagation", json={"spec": "fixed:12"}).json() == {"kind": "fixed", "params": [12.0]}
        assert admin.put("/admin/propagation", json={"spec": "nope"}).status_code == 400
        assert admin.get("/admin/clock").json()["kind"] == "real"
        assert admin.post("/admin/clock/advance", json={"seconds": 5}).status_code == 409
        assert admin.put("/admin/throttle", json={"reads": [5, 1]}).json()["reads"] == [5.0, 1.0]
        assert admin.put("/admin/throttle", json={"reads": [0, 1]}).status_code == 400
        deleted = admin.delete(f"/admin/vms/{created.json()['vm_id']}")
        assert deleted.json()["deleted"] is True
        assert admin.get("/admin/vms/web-1").status_code == 404
        assert admin.post("/admin/vms", content=b"{not json").status_code == 400


def test_admin_clock_advances_a_virtual_clock(twin_factory) -> None:
    clock = VirtualClock(start=1_000_000.0)
    twin = twin_factory(clock=clock)
    with admin_client(twin) as admin:
        assert admin.get("/admin/clock").json()["now"] == 1_000_000.0
        assert admin.post("/admin/clock/advance", json={"seconds": 90}).json()["now"] == 1_000_090.0
        assert admin.post("/admin/clock/advance", json={"seconds": -1}).status_code == 400


def test_nothing_in_the_twin_imports_skr() -> None:
    offenders = []
    for path in sorted((ROOT / "localdev" / "twin").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "skr" or n.startswith("skr.")]
    assert offenders == []
    assert len(list((ROOT / "localdev" / "twin").rglob("*.py"))) > 10


def test_twin_modules_import_without_skr_loaded() -> None:
    code = ("import sys, localdev.twin.core, localdev.twin.server, localdev.twin.cli;"
            "print(sorted(m for m in sys.modules if m == 'skr' or m.startswith('skr.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_prints_one_json_line_first_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "localdev", "twin", "--clock", "virtual", "--seed", "3",
                             "--propagation", "fixed:5", "--vault", "v1", "--vault", "v2"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert set(info) >= INFO_KEYS and set(info["vaults"]) == {"v1", "v2"}
        assert info["subscription_id"] == TwinConfig(seed=3).subscription_id
        response = httpx.get(info["admin_url"] + "/admin/clock", verify=ssl.create_default_context(cafile=info["ca_bundle"]))
        assert response.json()["kind"] == "virtual"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert not Path(info["ca_bundle"]).exists()


def test_cli_rejects_bad_options_clearly() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "localdev", "twin", "--propagation", "weird"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "bad propagation spec" in out.stderr and out.stdout == ""
