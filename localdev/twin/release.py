"""Key Vault Secure Key Release: ``POST /keys/{name}[/{version}]/release`` (skr_flow.md §4-5, §9.3).

Order of checks, as the real service: authentication (401 challenge) and the RBAC data action
``Microsoft.KeyVault/vaults/keys/release/action`` at key scope (403 ``ForbiddenByRbac`` until the
assignment has propagated), the request body, the key (404 ``KeyNotFound``, disabled, not
exportable), then the attestation token: its signature against the policy authority's OIDC
metadata and JWKS fetched over HTTPS, ``exp``/``nbf`` on the twin clock, ``iss`` = authority,
then the release policy (the twin's own evaluator). The response is a JWS signed by a leaf of a
three-certificate ``x5c`` chain rooted at the twin CA, carrying the key with ``key_hsm`` wrapped
to the first RSA ``encrypt`` key of the token's ``x-ms-runtime.keys``.

Where Azure's exact answer is unconfirmed (reference skr_flow.md §11) the twin answers:

* policy not met: 403 ``Forbidden`` / inner ``AccessDenied``, "Target environment attestation
  does not meet key release policy requirements. Unmet claim conditions: <paths>";
* token not verifiable (signature, JWKS, issuer, expiry): 403 ``Forbidden`` / inner
  ``AccessDenied``, "Target environment attestation statement cannot be verified. <why>";
* key not exportable: 400 ``BadParameter`` (``ReleaseSettings.refusal_status`` switches to 403);
* key disabled: 403 ``Forbidden`` / inner ``KeyDisabled``; expired or not yet valid: 403 ``Forbidden``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from localdev.twin.attached import attached
from localdev.twin.http import TwinHttpError, ci_route, kv_error_response
from localdev.twin.jws import (
    JwsError,
    b64url,
    cert_der_b64,
    parse_compact,
    rsa_public_from_jwk,
    sign_compact,
    thumbprints,
    verify_rs256,
)
from localdev.twin.keyvault import KeyVaultApi, public_jwk
from localdev.twin.keywrap import DEFAULT_ENC, ENC_HASHES, build_key_hsm
from localdev.twin.model import KeyVersion, StoredKey, Vault
from localdev.twin.policy_eval import PolicyFormatError, evaluate, normalise_authority, parse_policy
from localdev.twin.tls import TlsMaterial

if TYPE_CHECKING:
    from localdev.twin.core import Twin

RELEASE_ACTION = "Microsoft.KeyVault/vaults/keys/release/action"
UNVERIFIABLE = "Target environment attestation statement cannot be verified."
POLICY_NOT_MET = "Target environment attestation does not meet key release policy requirements."
CHAIN_VALIDITY = dt.timedelta(days=3650)
VAULT_NAMES = ("vault.azure.net", "*.vault.azure.net", "*.vaultcore.azure.net")


@dataclass
class ReleaseSettings:
    """Knobs for behaviour Azure does not document (see the module docstring)."""

    refusal_status: int = 400  # not-exportable answer: 400 BadParameter or 403 Forbidden
    clock_skew_seconds: float = 0.0  # leeway on the attestation token's exp/nbf
    jwks_timeout_seconds: float = 10.0


@dataclass
class _Chain:
    leaf_key: rsa.RSAPrivateKey
    certs: list[x509.Certificate]

    @property
    def x5c(self) -> list[str]:
        return [cert_der_b64(cert) for cert in self.certs]


@dataclass
class ReleaseService:
    """Per-twin release state: the signing chains and settings."""

    hosts: tuple[str, ...]
    trusted: _Chain
    settings: ReleaseSettings = field(default_factory=ReleaseSettings)
    _rogue: _Chain | None = None

    @property
    def rogue(self) -> _Chain:
        """Same shape, under a root named like the twin's but with another key (release_untrusted_chain)."""
        if self._rogue is None:
            root = TlsMaterial.generate()
            root.cleanup()
            self._rogue = _chain_under(root, self.hosts)
        return self._rogue


def _chain_under(root: TlsMaterial, hosts: tuple[str, ...]) -> _Chain:
    """Leaf ``CN=vault.azure.net`` <- twin Key Vault issuing CA <- ``root``'s CA (as the real 3-cert x5c)."""
    issuing_key = ec.generate_private_key(ec.SECP256R1())
    issuing = root.issue_cert("Azure twin Key Vault issuing CA", issuing_key.public_key(), is_ca=True,
                              validity=CHAIN_VALIDITY)
    issuer = replace(root, ca_key=issuing_key, ca_cert=issuing)  # issue_cert now signs as the issuing CA
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = issuer.issue_cert("vault.azure.net", leaf_key.public_key(), sans=(*VAULT_NAMES, *hosts), server=True,
                             validity=CHAIN_VALIDITY)
    return _Chain(leaf_key=leaf_key, certs=[leaf, issuing, root.ca_cert])


def service_for(twin: Twin) -> ReleaseService:
    """The twin's release state (signing chains are made on first use)."""

    def build() -> ReleaseService:
        hosts = (twin.config.host, "localhost")
        return ReleaseService(hosts=hosts, trusted=_chain_under(twin.tls, hosts))

    return attached(twin, "release.service", build)


# --------------------------------------------------------------------------- error helpers
def _kv(status: int, code: str, message: str, inner: str | None = None) -> TwinHttpError:
    return TwinHttpError(kv_error_response(status, code, message, inner))


def _bad(message: str) -> TwinHttpError:
    return _kv(400, "BadParameter", message)


def _unverifiable(why: str) -> TwinHttpError:
    return _kv(403, "Forbidden", f"{UNVERIFIABLE} {why}", "AccessDenied")


# ------------------------------------------------------------------------------ the steps
def _api_version(request: Request) -> str:
    version = request.query_params.get("api-version", "")
    if not version:
        raise _bad("The 'api-version' query parameter is required.")
    if version.startswith("7."):
        try:
            minor = int(version.split(".")[1].split("-")[0])
        except ValueError:
            minor = -1
        if minor < 3:
            raise _bad(f"The operation 'release' is not supported in api-version '{version}'; use 7.3 or later.")
    elif not (version[:4].isdigit() and int(version[:4]) >= 2025):
        raise _bad(f"The specified version ({version}) is not recognized. Consider using the latest supported "
                   "version (7.6).")
    return version


def _body(raw: bytes) -> tuple[str, str, str | None]:
    """(target, enc, nonce) from KeyReleaseParameters."""
    if not raw:
        raise _bad("The request body is empty.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad("The request content was invalid and could not be deserialized.") from None
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    target = body.get("target")
    if not isinstance(target, str) or not target:
        raise _bad("Property 'target' is required and must be a non-empty string (the attestation token).")
    enc = body.get("enc") or DEFAULT_ENC
    if enc not in ENC_HASHES:
        raise _bad(f"Invalid value '{enc}' for 'enc'. Valid values: {', '.join(ENC_HASHES)}.")
    nonce = body.get("nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise _bad("Property 'nonce' must be a string.")
    return target, enc, nonce


def _find_key(vault: Vault, name: str, version: str) -> tuple[StoredKey, KeyVersion]:
    stored = vault.keys.get(name.lower())
    if stored is None or stored.deleted or not stored.versions:
        raise _kv(404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault")
    if not version:
        return stored, stored.latest
    for candidate in stored.versions:
        if candidate.version.lower() == version.lower():
            return stored, candidate
    raise _kv(404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not found in this key vault")


def _check_releasable(key: KeyVersion, settings: ReleaseSettings, now: float) -> dict[str, Any]:
    if not key.enabled:
        raise _kv(403, "Forbidden", "Operation release is not allowed on a disabled key.", "KeyDisabled")
    if key.exp is not None and key.exp <= now:
        raise _kv(403, "Forbidden", "Operation release is not allowed on an expired key.")
    if key.nbf is not None and key.nbf > now:
        raise _kv(403, "Forbidden", "Operation release is not allowed on a key that is not yet valid.")
    if not key.exportable or key.release_policy is None:
        status = settings.refusal_status
        raise _kv(status, "BadParameter" if status == 400 else "Forbidden",
                  "The key is not exportable: release requires a key created with exportable=true and a release "
                  "policy.")
    try:
        return parse_policy(key.release_policy)
    except PolicyFormatError as exc:
        raise _bad(f"The key's release policy is invalid: {exc}") from exc


async def _fetch_json(client: httpx.AsyncClient, url: str) -> Any:
    response = await client.get(url)
    if response.status_code != 200:
        raise _unverifiable(f"{urlsplit(url).path} answered HTTP {response.status_code}.")
    try:
        return response.json()
    except ValueError:
        raise _unverifiable(f"{urlsplit(url).path} did not return JSON.") from None


async def _signing_key(twin: Twin, authority: str, kid: str) -> rsa.RSAPublicKey:
    """The authority's key ``kid``: OIDC metadata -> jwks_uri -> JWKS (over HTTPS)."""
    context = ssl.create_default_context(cafile=twin.ca_bundle_path)
    timeout = service_for(twin).settings.jwks_timeout_seconds
    try:
        async with httpx.AsyncClient(verify=context, timeout=timeout, trust_env=False) as client:
            metadata = await _fetch_json(client, f"{authority}/.well-known/openid-configuration")
            jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
            if not isinstance(jwks_uri, str):
                raise _unverifiable("The authority's OpenID metadata has no jwks_uri.")
            jwks = await _fetch_json(client, jwks_uri)
    except httpx.HTTPError as exc:
        raise _unverifiable(f"The authority's signing keys could not be fetched ({type(exc).__name__}).") from exc
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    for jwk in keys if isinstance(keys, list) else []:
        if isinstance(jwk, dict) and jwk.get("kid") == kid:
            return _public_key_of(jwk)
    raise _unverifiable(f"The signing key '{kid}' is not published by the authority.")


def _public_key_of(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    try:
        if "n" in jwk and "e" in jwk:
            return rsa_public_from_jwk(jwk)
        cert = x509.load_der_x509_certificate(base64.b64decode(jwk["x5c"][0]))
        key = cert.public_key()
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise _unverifiable("The authority published an unusable signing key.") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise _unverifiable("The authority's signing key is not an RSA key.")
    return key


async def verify_attestation(twin: Twin, token: str, policy: dict[str, Any]) -> dict[str, Any]:
    """Verified claims of ``token``, or 403 AccessDenied naming why it is not verifiable."""
    try:
        header, claims, _, _ = parse_compact(token)
    except JwsError as exc:
        raise _unverifiable(f"The attestation token is malformed: {exc}.") from exc
    issuer = claims.get("iss")
    if not isinstance(issuer, str):
        raise _unverifiable("The attestation token has no issuer.")
    authorities = [a["authority"] for a in policy["anyOf"]
                   if normalise_authority(a["authority"]) == normalise_authority(issuer)]
    if not authorities:
        raise _unverifiable(f"The token issuer '{issuer}' is not an authority of the key release policy.")
    if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
        raise _unverifiable("The attestation token must be RS256-signed and name its key (kid).")
    key = await _signing_key(twin, normalise_authority(authorities[0]), header["kid"])
    try:
        verify_rs256(token, key)
    except JwsError as exc:
        raise _unverifiable("The attestation token signature does not verify.") from exc
    now, skew = twin.clock.time(), service_for(twin).settings.clock_skew_seconds
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] + skew <= now:
        raise _unverifiable("The attestation token has expired.")
    if isinstance(claims.get("nbf"), (int, float)) and claims["nbf"] - skew > now:
        raise _unverifiable("The attestation token is not yet valid.")
    return claims


def transfer_key(claims: dict[str, Any]) -> tuple[str, rsa.RSAPublicKey]:
    """The KEK: the first RSA key of ``x-ms-runtime.keys`` usable for encryption."""
    runtime = claims.get("x-ms-runtime")
    keys = runtime.get("keys") if isinstance(runtime, dict) else None
    for jwk in keys if isinstance(keys, list) else []:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            continue
        ops = jwk.get("key_ops")
        if (isinstance(ops, list) and "encrypt" in ops) or jwk.get("use") == "enc":
            try:
                return str(jwk.get("kid", "")), rsa_public_from_jwk(jwk)
            except (KeyError, ValueError) as exc:
                raise _bad("The attestation token's transfer key is not a valid RSA key.") from exc
    raise _bad("The attestation token carries no RSA encryption key in x-ms-runtime.keys.")


def release_payload(twin: Twin, vault: Vault, stored: StoredKey, key: KeyVersion, *, requested_kid: str,
                    api_version: str, enc: str, kek_kid: str, kek: rsa.RSAPublicKey) -> dict[str, Any]:
    jwk = public_jwk(vault, stored, key)
    jwk["key_hsm"] = build_key_hsm(kek, kek_kid, key.private_key, enc)
    return {
        "request": {"api-version": api_version, "enc": enc, "kid": requested_kid},
        "response": {"key": {
            "key": jwk,
            "attributes": KeyVaultApi(twin).attributes(key),
            "tags": dict(key.tags),
            "release_policy": {"data": b64url(key.release_policy or b""), "immutable": key.immutable_policy},
        }},
    }


def sign_release(twin: Twin, payload: dict[str, Any], *, vm: str | None = None) -> str:
    """The release JWS, honouring the bad-signature and untrusted-chain faults."""
    service = service_for(twin)
    untrusted = twin.faults.active("release_untrusted_chain", service="keyvault", vm=vm) is not None
    corrupt = twin.faults.active("release_bad_signature", service="keyvault", vm=vm) is not None
    chain = service.rogue if untrusted else service.trusted
    header = {"alg": "RS256", **thumbprints(chain.certs[0]), "typ": "JWT", "x5c": chain.x5c}
    return sign_compact(header, payload, chain.leaf_key, corrupt=corrupt)


def routes(twin: Twin) -> list[BaseRoute]:
    """Routes of every vault listener (mount before the generic key routes)."""

    async def release(request: Request) -> JSONResponse:
        vault = twin.vault_of(request)
        name = request.path_params["name"]
        version = request.path_params.get("version", "")
        scope = f"{vault.resource_id}/keys/{name}"
        twin.kv_call(request, RELEASE_ACTION, scope, vault)
        api_version = _api_version(request)
        target, enc, _nonce = _body(await request.body())
        with twin.lock:
            stored, key = _find_key(vault, name, version)
        policy = _check_releasable(key, service_for(twin).settings, twin.clock.time())
        claims = await verify_attestation(twin, target, policy)
        verdict = evaluate(policy, claims)
        if not verdict.allowed:
            why = verdict.describe()
            raise _kv(403, "Forbidden", f"{POLICY_NOT_MET} {why[:1].upper()}{why[1:]}.", "AccessDenied")
        kek_kid, kek = transfer_key(claims)
        requested = f"{vault.url}/keys/{name}" + (f"/{version}" if version else "")
        payload = release_payload(twin, vault, stored, key, requested_kid=requested, api_version=api_version,
                                  enc=enc, kek_kid=kek_kid, kek=kek)
        vm = twin.find_vm(vm_id=str(claims.get("x-ms-azurevm-vmid", "")))
        return JSONResponse({"value": sign_release(twin, payload, vm=vm.resource_id if vm else None)})

    return [
        ci_route("/keys/{name}/release", release, ["POST"]),
        ci_route("/keys/{name}//release", release, ["POST"]),
        ci_route("/keys/{name}/{version}/release", release, ["POST"]),
    ]
