"""Microsoft Azure Attestation (MAA) of the twin: OIDC metadata, JWKS, guest attestation.

Guest tokens follow the real claim layout (reference skr_flow.md §2): top-level
``x-ms-attestation-type = azurevm``, the SEV-SNP claims under ``x-ms-isolation-tee`` and the VM's
vTPM ``TpmEphemeralEncryptionKey`` in top-level ``x-ms-runtime.keys``; 8 h lifetime on the
twin clock. What each TEE profile gets (real MAA behaviour as far as the references tell):

* compliant CVM: ``x-ms-isolation-tee.x-ms-compliance-status = azure-compliant-cvm``;
* non-compliant CVM: same layout with ``azure-non-compliant-cvm`` (the real value for a
  non-compliant SEV-SNP guest is undocumented);
* Trusted Launch: guest attestation works (vTPM + secure boot) but the token has **no**
  ``x-ms-isolation-tee`` object, so SEV-SNP release policies are not met;
* plain VM (no vTPM): attestation fails with 400 (nothing to attest), like the real client
  failing on a machine without a TPM.

Simplifications: the request evidence is an HMAC by a per-VM secret (the sandbox hands it to the
in-VM tools) instead of a TPM quote and SNP report, and the token comes back unsealed in
``{"token": <JWT>}`` instead of an envelope encrypted to the vTPM (only our own
``AttestationClient`` stand-in reads it).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import uuid
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from localdev.twin.attached import attached
from localdev.twin.jws import b64url, b64url_decode, cert_der_b64, rsa_public_jwk, sign_compact
from localdev.twin.model import SimVm, TeeProfile

if TYPE_CHECKING:
    from localdev.twin.core import Twin

TOKEN_LIFETIME_SECONDS = 8 * 3600
API_VERSION = "2020-10-01"
TPM_KEK_KID = "TpmEphemeralEncryptionKey"
COMPLIANT = "azure-compliant-cvm"
NON_COMPLIANT = "azure-non-compliant-cvm"


class AttestationRefusedError(Exception):
    """Evidence MAA rejects (400: an attestation failure the client must not retry)."""


class MaaSigner:
    """The attestation instance's token-signing key and its self-signed certificate."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Azure twin attestation signing")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .sign(self.key, hashes.SHA256())
        )
        digest = hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).digest()
        self.kid = base64.b64encode(digest).decode("ascii")
        # Per-instance secret from which each VM's evidence key is derived.
        self._evidence_root = secrets.token_bytes(32)

    def openid_configuration(self, issuer: str) -> dict[str, Any]:
        issuer = issuer.rstrip("/")
        return {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/certs",
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["token", "none"],
            "claims_supported": ["x-ms-ver", "x-ms-attestation-type", "x-ms-policy-hash", "x-ms-runtime"],
            "revocation_endpoint": f"{issuer}/revoke",
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{"kid": self.kid, "kty": "RSA", "x5c": [cert_der_b64(self.cert)]}]}

    def vm_secret(self, vm_id: str) -> str:
        """The simulated vTPM attestation secret of one VM (handed to its sandbox only)."""
        return hmac.new(self._evidence_root, vm_id.lower().encode(), hashlib.sha256).hexdigest()

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": "RS256", "jku": f"{claims['iss']}/certs", "kid": self.kid, "typ": "JWT"}
        return sign_compact(header, claims, self.key)


def parse_evidence(body: Any) -> tuple[str, str, str]:
    """Decode ``{"AttestationInfo": b64url(JSON)}``; returns (vm_id, client_payload, mac)."""
    if not isinstance(body, dict) or not isinstance(body.get("AttestationInfo"), str):
        raise AttestationRefusedError("The request body must be a JSON object with an 'AttestationInfo' string.")
    try:
        info = json.loads(b64url_decode(body["AttestationInfo"]))
        tpm = info["TpmInfo"]
        vm_id, mac = str(tpm["VmId"]), str(tpm["PcrQuote"])
        payload = info.get("ClientPayload", "")
    except (ValueError, KeyError, TypeError) as exc:
        raise AttestationRefusedError(f"AttestationInfo could not be parsed: {exc}") from exc
    if not isinstance(payload, str):
        payload = json.dumps(payload, separators=(",", ":"))
    return vm_id, payload, mac


def check_evidence(signer: MaaSigner, vm: SimVm, payload: str, mac: str) -> None:
    expected = hmac.new(
        signer.vm_secret(vm.vm_id).encode(), f"{vm.vm_id.lower()}|{payload}".encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, mac):
        raise AttestationRefusedError("TPM quote verification failed: the quote was not signed by the VM's AK.")
    if vm.tee is TeeProfile.PLAIN:
        raise AttestationRefusedError("No TPM evidence: the VM has no vTPM (securityType is not TrustedLaunch or CVM).")


def guest_claims(vm: SimVm, issuer: str, now: float, client_payload: str) -> dict[str, Any]:
    """The claim set of an AzureGuest token for ``vm`` issued at ``now`` (twin clock)."""
    issued = int(now)
    try:
        payload_obj = json.loads(client_payload) if client_payload else {}
    except ValueError:
        payload_obj = {}
    windows = vm.os_type.lower() == "windows"
    kek = rsa_public_jwk(vm.vtpm_key.public_key(), kid=TPM_KEK_KID, key_ops=["encrypt"])
    claims: dict[str, Any] = {
        "exp": issued + TOKEN_LIFETIME_SECONDS,
        "iat": issued,
        "iss": issuer.rstrip("/"),
        "jti": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        "nbf": issued,
        "secureboot": True,
        "x-ms-attestation-type": "azurevm",
        "x-ms-azurevm-attestation-protocol-ver": "2.0",
        "x-ms-azurevm-attested-pcrs": [0, 1, 2, 3, 4, 5, 6, 7],
        "x-ms-azurevm-bootdebug-enabled": False,
        "x-ms-azurevm-dbvalidated": True,
        "x-ms-azurevm-dbxvalidated": True,
        "x-ms-azurevm-debuggersdisabled": True,
        "x-ms-azurevm-default-securebootkeysvalidated": True,
        "x-ms-azurevm-elam-enabled": windows,
        "x-ms-azurevm-flightsigning-enabled": False,
        "x-ms-azurevm-hvci-policy": 0,
        "x-ms-azurevm-hypervisordebug-enabled": False,
        "x-ms-azurevm-is-windows": windows,
        "x-ms-azurevm-kerneldebug-enabled": False,
        "x-ms-azurevm-osbuild": "NotApplication",
        "x-ms-azurevm-osdistro": "Microsoft" if windows else "Ubuntu",
        "x-ms-azurevm-ostype": "Windows" if windows else "Linux",
        "x-ms-azurevm-osversion-major": 2022 if windows else 20,
        "x-ms-azurevm-osversion-minor": 0 if windows else 4,
        "x-ms-azurevm-signingdisabled": True,
        "x-ms-azurevm-testsigning-enabled": False,
        "x-ms-azurevm-vmid": vm.vm_id.upper(),
        "x-ms-policy-hash": b64url(hashlib.sha256(b"twin default AzureGuest policy").digest()),
        "x-ms-runtime": {"client-payload": payload_obj, "keys": [kek]},
        "x-ms-ver": "1.0",
    }
    if vm.tee in (TeeProfile.COMPLIANT_CVM, TeeProfile.NONCOMPLIANT_CVM):
        claims["x-ms-isolation-tee"] = _isolation_tee(vm, issued)
    return claims


def _isolation_tee(vm: SimVm, issued: int) -> dict[str, Any]:
    seed = hashlib.sha256(vm.vm_id.encode()).hexdigest()
    hcl_key = rsa_public_jwk(vm.vtpm_key.public_key(), kid="HCLAkPub", key_ops=["sign"])
    compliant = vm.tee is TeeProfile.COMPLIANT_CVM
    return {
        "x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": COMPLIANT if compliant else NON_COMPLIANT,
        "x-ms-runtime": {
            "keys": [hcl_key],
            "vm-configuration": {
                "console-enabled": True,
                "current-time": issued,
                "secure-boot": True,
                "tpm-enabled": True,
                "vmUniqueId": vm.vm_id.upper(),
            },
        },
        "x-ms-sevsnpvm-authorkeydigest": "0" * 96,
        "x-ms-sevsnpvm-bootloader-svn": 3,
        "x-ms-sevsnpvm-familyId": "01000000000000000000000000000000",
        "x-ms-sevsnpvm-guestsvn": 2,
        "x-ms-sevsnpvm-hostdata": "0" * 64,
        "x-ms-sevsnpvm-idkeydigest": (seed * 2)[:96],
        "x-ms-sevsnpvm-imageId": "02000000000000000000000000000000",
        "x-ms-sevsnpvm-is-debuggable": not compliant,
        "x-ms-sevsnpvm-launchmeasurement": (seed * 2)[:96],
        "x-ms-sevsnpvm-microcode-svn": 115,
        "x-ms-sevsnpvm-migration-allowed": False,
        "x-ms-sevsnpvm-reportdata": seed + "0" * 64,
        "x-ms-sevsnpvm-reportid": seed,
        "x-ms-sevsnpvm-smt-allowed": True,
        "x-ms-sevsnpvm-snpfw-svn": 8,
        "x-ms-sevsnpvm-tee-svn": 0,
        "x-ms-sevsnpvm-vmpl": 0,
    }


def signer_for(twin: Twin) -> MaaSigner:
    """The twin's attestation signer (one per twin)."""
    return attached(twin, "maa.signer", MaaSigner)


def issuer_of(twin: Twin) -> str:
    return twin.urls.maa.rstrip("/")


def mint_guest_token(twin: Twin, vm: SimVm, nonce: str | None = None) -> str:
    """An AzureGuest token for ``vm`` now (tests and tools that skip the HTTP round trip)."""
    if vm.tee is TeeProfile.PLAIN:
        raise AttestationRefusedError("a VM without a vTPM cannot attest")
    payload = json.dumps({"nonce": nonce} if nonce else {}, separators=(",", ":"))
    return signer_for(twin).sign(guest_claims(vm, issuer_of(twin), twin.clock.time(), payload))


def _maa_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def routes(twin: Twin) -> list[BaseRoute]:
    """Starlette routes of the MAA listener."""

    async def openid_configuration(request: Request) -> JSONResponse:
        twin.counters.record("anonymous", "maa", "openid-configuration")
        return JSONResponse(signer_for(twin).openid_configuration(issuer_of(twin)))

    async def certs(request: Request) -> JSONResponse:
        twin.counters.record("anonymous", "maa", "certs")
        return JSONResponse(signer_for(twin).jwks())

    async def attest_guest(request: Request) -> JSONResponse:
        if not request.query_params.get("api-version"):
            twin.counters.record("anonymous", "maa", "attest/AzureGuest")
            return _maa_error(400, "InvalidParameter", "The 'api-version' query parameter is required.")
        signer = signer_for(twin)
        try:
            body = json.loads(await request.body() or b"null")
            vm_id, payload, mac = parse_evidence(body)
        except (ValueError, AttestationRefusedError) as exc:
            twin.counters.record("anonymous", "maa", "attest/AzureGuest")
            return _maa_error(400, "InvalidParameter", str(exc))
        vm = twin.find_vm(vm_id=vm_id)
        twin.counters.record((vm.principal_id or vm.vm_id) if vm else "anonymous", "maa", "attest/AzureGuest")
        if vm is None:
            return _maa_error(400, "InvalidParameter", "Attestation evidence names an unknown VM.")
        try:
            check_evidence(signer, vm, payload, mac)
        except AttestationRefusedError as exc:
            return _maa_error(400, "InvalidParameter", str(exc))
        token = signer.sign(guest_claims(vm, issuer_of(twin), twin.clock.time(), payload))
        return JSONResponse({"token": token})

    return [
        Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
        Route("/certs", certs, methods=["GET"]),
        Route("/attest/AzureGuest", attest_guest, methods=["POST"]),
    ]
