"""Shared arrangements of the twin's SKR contract tests (MAA, release, IMDS, vmtools, run commands).

Verification here is written independently of the twin (``cryptography``'s X.509 verifier, a
hand-written key_hsm unwrap), so the tests check the twin rather than re-run its code.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from azure.keyvault.keys import KeyClient, KeyReleasePolicy
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from cryptography.x509.verification import PolicyBuilder, Store

from localdev.twin.core import Twin
from localdev.twin.model import SimVm, TeeProfile
from localdev.twin.sandbox import hold_busy, prepare_sandbox
from localdev.twin.testing import key_client

RELEASE_ROLE = "08bbd89e-9f13-488c-ac41-acfcb10c90ab"
ENC_VALUES = ("CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_256", "RSA_AES_KEY_WRAP_384")
OAEP_HASH = {"CKM_RSA_AES_KEY_WRAP": hashes.SHA1, "RSA_AES_KEY_WRAP_256": hashes.SHA256,
             "RSA_AES_KEY_WRAP_384": hashes.SHA384}
PY38 = "/root/.pyenv/versions/3.8.18/bin/python3.8"


def b64url_json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return b64url_json(header), b64url_json(payload)


def cvm_policy(authority: str, *conditions: dict[str, Any]) -> bytes:
    """The documented guest-token CVM policy (or the given conditions) for ``authority``."""
    return json.dumps({"version": "1.0.0", "anyOf": [{"authority": authority, "allOf": list(conditions) or [
        {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
        {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
    ]}]}).encode()


def new_vm(twin: Twin, tee: TeeProfile = TeeProfile.COMPLIANT_CVM, **kwargs: Any) -> SimVm:
    return twin.create_vm("vm-" + uuid.uuid4().hex[:8], tee=tee, emit_event=False, **kwargs)


def exportable_key(twin: Twin, policy: bytes | None = None, *, kind: str = "rsa") -> str:
    """A new exportable HSM key (default: the CVM policy naming the twin's MAA); returns its name."""
    name = "key-" + uuid.uuid4().hex[:8]
    client = key_client(twin)
    release_policy = KeyReleasePolicy(policy or cvm_policy(twin.urls.maa))
    if kind == "rsa":
        client.create_rsa_key(name, hardware_protected=True, exportable=True, release_policy=release_policy)
    else:
        client.create_ec_key(name, hardware_protected=True, exportable=True, release_policy=release_policy)
    return name


def key_scope(twin: Twin, name: str) -> str:
    return f"{twin.vault().resource_id}/keys/{name}"


def grant_release(twin: Twin, vm: SimVm, key_name: str, *, propagate: bool = False) -> None:
    assert vm.principal_id is not None
    twin.grant(vm.principal_id, RELEASE_ROLE, key_scope(twin, key_name), propagate=propagate)


def vm_key_client(twin: Twin, vm: SimVm) -> KeyClient:
    assert vm.principal_id is not None
    client: KeyClient = key_client(twin, principal_id=vm.principal_id, retry_total=0)
    return client


def verify_release_jws(jws: str, ca_bundle: str, host: str = "127.0.0.1") -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the signature by x5c[0] and the chain (strict X.509 profile) up to the twin CA."""
    header, payload = jwt_parts(jws)
    certs = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in header["x5c"]]
    leaf_key = certs[0].public_key()
    assert isinstance(leaf_key, rsa.RSAPublicKey)
    signing_input, signature = jws.rsplit(".", 1)
    leaf_key.verify(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)), signing_input.encode(),
                    padding.PKCS1v15(), hashes.SHA256())
    anchors = x509.load_pem_x509_certificates(Path(ca_bundle).read_bytes())
    verifier = PolicyBuilder().store(Store(anchors)).build_server_verifier(
        x509.IPAddress(ipaddress.ip_address(host)))
    verifier.verify(certs[0], certs[1:])
    return header, payload


def unwrap_key_hsm(key_hsm: str, vtpm_key: rsa.RSAPrivateKey) -> tuple[dict[str, Any], bytes]:
    """What the VM's vTPM key recovers from a released ``key_hsm``: (header, plaintext)."""
    blob = b64url_json(key_hsm)
    ciphertext = base64.urlsafe_b64decode(blob["ciphertext"] + "=" * (-len(blob["ciphertext"]) % 4))
    size = vtpm_key.key_size // 8
    hash_type = OAEP_HASH[blob["header"]["enc"]]
    aes_key = vtpm_key.decrypt(ciphertext[:size], padding.OAEP(padding.MGF1(hash_type()), hash_type(), None))
    return blob["header"], aes_key_unwrap_with_padding(aes_key, ciphertext[size:])


def pkcs8(private_key: Any) -> bytes:
    der: bytes = private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
    return der


def run_in_vm(twin: Twin, vm: SimVm, workdir: Path, argv: list[str], *, interpreter: str | None = None,
              env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``vm``'s sandbox (clock held busy while it runs)."""
    sandbox_env = prepare_sandbox(twin, vm, workdir, interpreter=interpreter or sys.executable)
    sandbox_env.update(env or {})
    with hold_busy(twin, sandbox_env):
        return subprocess.run(argv, env=sandbox_env, capture_output=True, text=True, timeout=timeout, check=False,
                              cwd=workdir)
