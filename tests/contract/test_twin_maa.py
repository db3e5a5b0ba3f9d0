"""The twin's Microsoft Azure Attestation: OIDC metadata, JWKS and AzureGuest tokens over HTTPS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from localdev.clock import VirtualClock
from localdev.twin.core import Twin
from localdev.twin.maa import signer_for
from localdev.twin.model import SimVm, TeeProfile
from tests.contract._twin_skr_support import jwt_parts, new_vm


def _client(twin: Twin) -> httpx.Client:
    return httpx.Client(base_url=twin.urls.maa, verify=ssl.create_default_context(cafile=twin.ca_bundle_path))


def _evidence(twin: Twin, vm: SimVm, nonce: str | None = "n-123", *, vm_id: str | None = None,
              secret: str | None = None) -> dict[str, str]:
    """The simulated evidence a VM's attestation library posts (HMAC stands in for the TPM quote)."""
    payload = json.dumps({"nonce": nonce} if nonce else {})
    key = (secret or signer_for(twin).vm_secret(vm.vm_id)).encode()
    quote = hmac.new(key, f"{(vm_id or vm.vm_id).lower()}|{payload}".encode(), hashlib.sha256).hexdigest()
    info = {"AttestationProtocolVersion": "2.0", "OSType": "Linux", "ClientPayload": payload,
            "TpmInfo": {"VmId": vm_id or vm.vm_id, "PcrQuote": quote}, "IsolationInfo": {"Type": "SevSnp"}}
    return {"AttestationInfo": base64.urlsafe_b64encode(json.dumps(info).encode()).decode().rstrip("=")}


def _attest(twin: Twin, body: Any, query: str = "?api-version=2020-10-01") -> httpx.Response:
    with _client(twin) as client:
        return client.post(f"/attest/AzureGuest{query}", json=body)


def test_openid_metadata_and_jwks_verify_the_token(twin: Twin) -> None:
    vm = new_vm(twin)
    with _client(twin) as client:
        metadata = client.get("/.well-known/openid-configuration").json()
        assert metadata["issuer"] == twin.urls.maa and not metadata["issuer"].endswith("/")
        assert metadata["jwks_uri"] == f"{twin.urls.maa}/certs"
        assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]
        jwks = client.get("/certs").json()
    token = _attest(twin, _evidence(twin, vm)).json()["token"]
    header, _ = jwt_parts(token)
    assert header == {"alg": "RS256", "jku": f"{twin.urls.maa}/certs", "kid": header["kid"], "typ": "JWT"}
    [jwk] = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert jwk["kty"] == "RSA" and set(jwk) == {"kid", "kty", "x5c"}
    public = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0])).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    signing_input, signature = token.rsplit(".", 1)
    public.verify(base64.urlsafe_b64decode(signature + "=="), signing_input.encode(), padding.PKCS1v15(),
                  hashes.SHA256())


def test_compliant_cvm_token_has_the_real_claim_layout(twin_factory: Callable[..., Twin]) -> None:
    clock = VirtualClock(start=1_800_000_000.0)
    twin = twin_factory(clock=clock)
    vm = new_vm(twin)
    response = _attest(twin, _evidence(twin, vm, "fresh-nonce"))
    assert response.status_code == 200 and set(response.json()) == {"token"}
    _, claims = jwt_parts(response.json()["token"])
    assert claims["iss"] == twin.urls.maa
    assert claims["iat"] == claims["nbf"] == 1_800_000_000 and claims["exp"] - claims["iat"] == 28_800
    assert claims["x-ms-attestation-type"] == "azurevm"
    assert claims["x-ms-azurevm-vmid"] == vm.vm_id.upper()
    tee = claims["x-ms-isolation-tee"]
    assert tee["x-ms-attestation-type"] == "sevsnpvm"
    assert tee["x-ms-compliance-status"] == "azure-compliant-cvm"
    assert tee["x-ms-sevsnpvm-is-debuggable"] is False
    assert {k for k in tee if k.startswith("x-ms-sevsnpvm-")} >= {
        "x-ms-sevsnpvm-authorkeydigest", "x-ms-sevsnpvm-bootloader-svn", "x-ms-sevsnpvm-familyId",
        "x-ms-sevsnpvm-guestsvn", "x-ms-sevsnpvm-hostdata", "x-ms-sevsnpvm-idkeydigest", "x-ms-sevsnpvm-imageId",
        "x-ms-sevsnpvm-launchmeasurement", "x-ms-sevsnpvm-microcode-svn", "x-ms-sevsnpvm-migration-allowed",
        "x-ms-sevsnpvm-reportdata", "x-ms-sevsnpvm-reportid", "x-ms-sevsnpvm-smt-allowed",
        "x-ms-sevsnpvm-snpfw-svn", "x-ms-sevsnpvm-tee-svn", "x-ms-sevsnpvm-vmpl"}
    assert tee["x-ms-runtime"]["keys"][0]["kid"] == "HCLAkPub"
    runtime = claims["x-ms-runtime"]
    assert runtime["client-payload"] == {"nonce": "fresh-nonce"}
    [kek] = runtime["keys"]
    numbers = vm.vtpm_key.public_key().public_numbers()
    assert kek["kid"] == "TpmEphemeralEncryptionKey" and kek["kty"] == "RSA" and kek["key_ops"] == ["encrypt"]
    assert kek["e"] == "AQAB"
    assert int.from_bytes(base64.urlsafe_b64decode(kek["n"] + "=="), "big") == numbers.n
    assert numbers.n.bit_length() == 2048


def test_non_compliant_and_trusted_launch_vms(twin: Twin) -> None:
    noncompliant = new_vm(twin, TeeProfile.NONCOMPLIANT_CVM)
    _, claims = jwt_parts(_attest(twin, _evidence(twin, noncompliant)).json()["token"])
    assert claims["x-ms-isolation-tee"]["x-ms-attestation-type"] == "sevsnpvm"
    assert claims["x-ms-isolation-tee"]["x-ms-compliance-status"] == "azure-non-compliant-cvm"

    trusted_launch = new_vm(twin, TeeProfile.TRUSTED_LAUNCH, os_type="Windows")
    _, claims = jwt_parts(_attest(twin, _evidence(twin, trusted_launch)).json()["token"])
    assert claims["x-ms-attestation-type"] == "azurevm" and "x-ms-isolation-tee" not in claims
    assert claims["x-ms-azurevm-is-windows"] is True
    assert claims["x-ms-runtime"]["keys"][0]["kid"] == "TpmEphemeralEncryptionKey"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("plain", "no vTPM"),
        ("wrong-secret", "TPM quote verification failed"),
        ("unknown-vm", "unknown VM"),
        ("not-json", "AttestationInfo"),
        ("no-api-version", "api-version"),
    ],
)
def test_attestation_failures_are_400(twin: Twin, case: str, message: str) -> None:
    vm = new_vm(twin, TeeProfile.PLAIN if case == "plain" else TeeProfile.COMPLIANT_CVM)
    body: Any = _evidence(twin, vm)
    query = "?api-version=2020-10-01"
    if case == "wrong-secret":
        body = _evidence(twin, vm, secret="guessed")
    elif case == "unknown-vm":
        body = _evidence(twin, vm, vm_id="00000000-0000-0000-0000-000000000000")
    elif case == "not-json":
        body = {"AttestationInfo": "!!!"}
    elif case == "no-api-version":
        query = ""
    response = _attest(twin, body, query)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "InvalidParameter" and message in error["message"]


def test_maa_outage_and_counters(twin: Twin) -> None:
    vm = new_vm(twin)
    assert _attest(twin, _evidence(twin, vm)).status_code == 200
    twin.faults.add("maa_outage", count=1)
    assert _attest(twin, _evidence(twin, vm)).status_code == 503
    assert _attest(twin, _evidence(twin, vm)).status_code == 200
    assert twin.counters.get(caller=vm.principal_id, service="maa", operation="attest/AzureGuest") == 2
