"""Key Vault Secure Key Release on the twin, driven by the real ``KeyClient.release_key``."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
from collections.abc import Callable

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.keyvault.keys import KeyExportEncryptionAlgorithm
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import VerificationError

from localdev.clock import VirtualClock
from localdev.twin.core import Twin
from localdev.twin.jws import sign_compact
from localdev.twin.maa import guest_claims, mint_guest_token, signer_for
from localdev.twin.model import TeeProfile
from localdev.twin.release import RELEASE_ACTION
from localdev.twin.testing import key_client
from tests.contract._twin_skr_support import (
    ENC_VALUES,
    b64url_json,
    cvm_policy,
    exportable_key,
    grant_release,
    jwt_parts,
    key_scope,
    new_vm,
    pkcs8,
    unwrap_key_hsm,
    verify_release_jws,
    vm_key_client,
)


def _released(twin: Twin, *, tee: TeeProfile = TeeProfile.COMPLIANT_CVM, kind: str = "rsa") -> tuple:
    vm = new_vm(twin, tee)
    name = exportable_key(twin, kind=kind)
    grant_release(twin, vm, name)
    return vm, name, vm_key_client(twin, vm)


@pytest.mark.parametrize("enc", ENC_VALUES)
def test_release_wraps_the_key_to_the_vtpm_for_each_enc(twin: Twin, enc: str) -> None:
    vm, name, client = _released(twin)
    result = client.release_key(name, mint_guest_token(twin, vm), algorithm=KeyExportEncryptionAlgorithm(enc))

    header, payload = verify_release_jws(result.value, twin.ca_bundle_path)
    assert header["alg"] == "RS256" and header["typ"] == "JWT" and len(header["x5c"]) == 3
    leaf_der = base64.b64decode(header["x5c"][0])
    assert header["kid"] == hashlib.sha1(leaf_der).hexdigest().upper()
    assert payload["request"] == {"api-version": "2025-07-01", "enc": enc, "kid": f"{twin.vault().url}/keys/{name}"}
    released = payload["response"]["key"]
    public = key_client(twin).get_key(name)
    assert released["key"]["kid"] == public.id and released["key"]["kty"] == "RSA-HSM"
    assert released["attributes"]["exportable"] is True and released["attributes"]["enabled"] is True
    assert json.loads(base64.urlsafe_b64decode(released["release_policy"]["data"] + "==")) == json.loads(
        cvm_policy(twin.urls.maa))

    hsm_header, plaintext = unwrap_key_hsm(released["key"]["key_hsm"], vm.vtpm_key)
    assert hsm_header == {"kid": "TpmEphemeralEncryptionKey", "alg": "dir", "enc": enc}
    private = serialization.load_der_private_key(plaintext, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    numbers = private.public_key().public_numbers()
    assert (numbers.n, numbers.e) == (int.from_bytes(public.key.n, "big"), int.from_bytes(public.key.e, "big"))
    assert plaintext == pkcs8(twin.vault().keys[name.lower()].latest.private_key)


def test_release_without_enc_uses_ckm_and_a_versioned_request_echoes_the_version(twin: Twin) -> None:
    vm, name, client = _released(twin)
    first = key_client(twin).get_key(name).properties.version
    key_client(twin).create_rsa_key(name, hardware_protected=True, exportable=True,
                                    release_policy=key_client(twin).get_key(name).properties.release_policy)
    result = client.release_key(name, mint_guest_token(twin, vm), version=first)
    _, payload = jwt_parts(result.value)
    assert payload["request"]["enc"] == "CKM_RSA_AES_KEY_WRAP"
    assert payload["request"]["kid"] == f"{twin.vault().url}/keys/{name}/{first}"
    assert payload["response"]["key"]["key"]["kid"].endswith(f"/{first}")
    _, plaintext = unwrap_key_hsm(payload["response"]["key"]["key"]["key_hsm"], vm.vtpm_key)
    assert plaintext == pkcs8(twin.vault().keys[name.lower()].versions[0].private_key)


def test_ec_keys_are_released_as_pkcs8(twin: Twin) -> None:
    vm, name, client = _released(twin, kind="ec")
    result = client.release_key(name, mint_guest_token(twin, vm), algorithm="RSA_AES_KEY_WRAP_384")
    _, payload = verify_release_jws(result.value, twin.ca_bundle_path)
    _, plaintext = unwrap_key_hsm(payload["response"]["key"]["key"]["key_hsm"], vm.vtpm_key)
    private = serialization.load_der_private_key(plaintext, password=None)
    public = key_client(twin).get_key(name)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers().x == int.from_bytes(public.key.x, "big")
    assert payload["response"]["key"]["key"]["kty"] == "EC-HSM"


def test_both_versionless_paths_release(twin: Twin) -> None:
    vm, name, client = _released(twin)
    token = mint_guest_token(twin, vm)
    for path in (f"/keys/{name}/release", f"/keys/{name}//release"):
        response = client.send_request(HttpRequest("POST", f"{twin.vault().url}{path}?api-version=7.4",
                                                   json={"target": token}))
        assert response.status_code == 200, response.text()
        _, payload = verify_release_jws(response.json()["value"], twin.ca_bundle_path)
        assert payload["request"]["api-version"] == "7.4"


@pytest.mark.parametrize(
    ("tee", "unmet"),
    [
        (TeeProfile.NONCOMPLIANT_CVM, ["x-ms-isolation-tee.x-ms-compliance-status"]),
        (TeeProfile.TRUSTED_LAUNCH, ["x-ms-isolation-tee.x-ms-attestation-type",
                                     "x-ms-isolation-tee.x-ms-compliance-status"]),
    ],
)
def test_policy_denial_names_the_unmet_claims(twin: Twin, tee: TeeProfile, unmet: list[str]) -> None:
    vm, name, client = _released(twin, tee=tee)
    with pytest.raises(HttpResponseError) as caught:
        client.release_key(name, mint_guest_token(twin, vm))
    assert caught.value.status_code == 403
    assert caught.value.error.code == "Forbidden"
    message = caught.value.error.message
    assert "does not meet key release policy requirements" in message
    for claim in unmet:
        assert claim in message


def test_forbidden_by_rbac_until_the_assignment_propagates(twin_factory: Callable[..., Twin],
                                                           virtual_clock: VirtualClock) -> None:
    twin = twin_factory(clock=virtual_clock, propagation="fixed:90")
    vm = new_vm(twin)
    name = exportable_key(twin)
    grant_release(twin, vm, name, propagate=True)
    client = vm_key_client(twin, vm)
    token = mint_guest_token(twin, vm)
    with pytest.raises(HttpResponseError) as caught:
        client.release_key(name, token)
    body = caught.value.response.json()["error"]
    assert caught.value.status_code == 403 and body["code"] == "Forbidden"
    assert body["innererror"] == {"code": "ForbiddenByRbac"}
    assert body["message"].startswith("Caller is not authorized to perform action on resource.\r\n")
    assert f"Action: '{RELEASE_ACTION}'\r\n" in body["message"]
    assert f"Resource: '{key_scope(twin, name).lower()}'\r\n" in body["message"]
    assert f"oid={vm.principal_id}" in body["message"]
    virtual_clock.advance(60)
    with pytest.raises(HttpResponseError):
        client.release_key(name, token)
    virtual_clock.advance(31)
    verify_release_jws(client.release_key(name, token).value, twin.ca_bundle_path)
    assert twin.counters.get(caller=vm.principal_id, service="keyvault", operation=RELEASE_ACTION) == 3


def test_a_vm_without_the_role_is_refused(twin: Twin) -> None:
    vm = new_vm(twin)
    name = exportable_key(twin)
    with pytest.raises(HttpResponseError) as caught:
        vm_key_client(twin, vm).release_key(name, mint_guest_token(twin, vm))
    assert caught.value.response.json()["error"]["innererror"]["code"] == "ForbiddenByRbac"


def test_missing_key_and_version_are_key_not_found(twin: Twin) -> None:
    vm, name, client = _released(twin)
    token = mint_guest_token(twin, vm)
    with pytest.raises(ResourceNotFoundError) as caught:
        client.release_key(name, token, version="0" * 32)
    assert caught.value.error.code == "KeyNotFound"
    assert f"{name}/{'0' * 32} was not found" in caught.value.error.message
    other = "nokey"
    grant_release(twin, vm, other)
    with pytest.raises(ResourceNotFoundError) as caught:
        client.release_key(other, token)
    assert caught.value.error.message == "A key with (name/id) nokey was not found in this key vault"


def test_non_exportable_and_disabled_keys_are_refused(twin: Twin) -> None:
    vm = new_vm(twin)
    admin = key_client(twin)
    admin.create_rsa_key("plain", hardware_protected=True)
    disabled = exportable_key(twin)
    admin.update_key_properties(disabled, enabled=False)
    for name in ("plain", disabled):
        grant_release(twin, vm, name)
    client, token = vm_key_client(twin, vm), mint_guest_token(twin, vm)
    with pytest.raises(HttpResponseError) as caught:
        client.release_key("plain", token)
    assert (caught.value.status_code, caught.value.error.code) == (400, "BadParameter")
    assert "not exportable" in caught.value.error.message
    with pytest.raises(HttpResponseError) as caught:
        client.release_key(disabled, token)
    assert caught.value.status_code == 403
    assert caught.value.response.json()["error"]["innererror"] == {"code": "KeyDisabled"}


def _assert_unverifiable(error: HttpResponseError, why: str) -> None:
    body = error.response.json()["error"]
    assert error.status_code == 403 and body["code"] == "Forbidden"
    assert body["innererror"] == {"code": "AccessDenied"}
    assert body["message"].startswith("Target environment attestation statement cannot be verified.")
    assert why in body["message"]


def test_unverifiable_tokens(twin: Twin) -> None:
    vm, name, client = _released(twin)
    token = mint_guest_token(twin, vm)
    header, _, signature = token.split(".")
    forged_claims = dict(jwt_parts(token)[1], **{"x-ms-isolation-tee": {"x-ms-compliance-status": "forged"}})
    forged = ".".join([header, base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).decode().rstrip("="),
                       signature])
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    foreign = sign_compact({"alg": "RS256", "kid": "someone-else", "typ": "JWT"}, jwt_parts(token)[1], stranger)
    other_issuer = signer_for(twin).sign(dict(jwt_parts(token)[1], iss="https://sharedweu.weu.attest.azure.net"))
    cases = [
        (forged, "signature does not verify"),
        (foreign, "'someone-else' is not published"),
        (other_issuer, "is not an authority of the key release policy"),
        ("not-a-jwt", "malformed"),
    ]
    for target, why in cases:
        with pytest.raises(HttpResponseError) as caught:
            client.release_key(name, target)
        _assert_unverifiable(caught.value, why)


def test_expired_attestation_tokens_are_refused(twin_factory: Callable[..., Twin],
                                                virtual_clock: VirtualClock) -> None:
    twin = twin_factory(clock=virtual_clock)
    vm, name, client = _released(twin)
    token = mint_guest_token(twin, vm)
    claims = jwt_parts(token)[1]
    assert claims["exp"] - claims["iat"] == 8 * 3600
    virtual_clock.advance(8 * 3600)
    with pytest.raises(HttpResponseError) as caught:
        client.release_key(name, token)
    _assert_unverifiable(caught.value, "has expired")


def test_a_token_without_an_rsa_encryption_key_is_refused(twin: Twin) -> None:
    vm, name, client = _released(twin)
    claims = guest_claims(vm, twin.urls.maa, twin.clock.time(), "{}")
    claims["x-ms-runtime"]["keys"] = [dict(claims["x-ms-runtime"]["keys"][0], key_ops=["sign"])]
    with pytest.raises(HttpResponseError) as caught:
        client.release_key(name, signer_for(twin).sign(claims))
    assert (caught.value.status_code, caught.value.error.code) == (400, "BadParameter")
    assert "x-ms-runtime.keys" in caught.value.error.message


@pytest.mark.parametrize(
    ("query", "body", "message"),
    [
        ("", {"target": "x"}, "'api-version' query parameter is required"),
        ("?api-version=7.2", {"target": "x"}, "use 7.3 or later"),
        ("?api-version=7.4", {}, "Property 'target' is required"),
        ("?api-version=7.4", {"target": "x", "enc": "AES"}, "Invalid value 'AES' for 'enc'"),
        ("?api-version=7.4", ["x"], "must be a JSON object"),
    ],
)
def test_bad_requests_are_bad_parameter(twin: Twin, query: str, body: object, message: str) -> None:
    vm, name, _ = _released(twin)
    assert vm.principal_id is not None
    bearer = twin.identity.mint_token(vm.principal_id, "https://vault.azure.net")
    response = httpx.post(f"{twin.vault().url}/keys/{name}/release{query}", json=body,
                          headers={"Authorization": f"Bearer {bearer}"},
                          verify=ssl.create_default_context(cafile=twin.ca_bundle_path))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadParameter"
    assert message in response.json()["error"]["message"]


def test_fault_bad_signature_breaks_only_the_signature(twin: Twin) -> None:
    vm, name, client = _released(twin)
    twin.faults.add("release_bad_signature", count=1)
    with pytest.raises(InvalidSignature):
        verify_release_jws(client.release_key(name, mint_guest_token(twin, vm)).value, twin.ca_bundle_path)
    verify_release_jws(client.release_key(name, mint_guest_token(twin, vm)).value, twin.ca_bundle_path)


def test_fault_untrusted_chain_is_signed_but_not_rooted_at_the_twin_ca(twin: Twin) -> None:
    vm, name, client = _released(twin)
    twin.faults.add("release_untrusted_chain", vm=vm.name)
    jws = client.release_key(name, mint_guest_token(twin, vm)).value
    with pytest.raises(VerificationError):
        verify_release_jws(jws, twin.ca_bundle_path)
    header, _ = jwt_parts(jws)
    rogue_root = header["x5c"][2]
    assert rogue_root != base64.b64encode(twin.tls.ca_cert.public_bytes(serialization.Encoding.DER)).decode()


def test_key_vault_outage_and_maa_outage(twin: Twin) -> None:
    vm, name, client = _released(twin)
    token = mint_guest_token(twin, vm)
    outage = twin.faults.add("kv_outage")
    with pytest.raises(HttpResponseError) as caught:
        client.release_key(name, token)
    assert caught.value.status_code == 503
    twin.faults.remove(outage.id)
    twin.faults.add("maa_outage")  # Key Vault cannot fetch the authority's signing keys
    with pytest.raises(HttpResponseError) as caught:
        client.release_key(name, token)
    _assert_unverifiable(caught.value, "answered HTTP 503")


def test_denial_keeps_the_claim_path_verbatim(twin: Twin) -> None:
    policy = cvm_policy(twin.urls.maa, {"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-familyId", "equals": "0"})
    vm = new_vm(twin)
    name = exportable_key(twin, policy)
    grant_release(twin, vm, name)
    with pytest.raises(HttpResponseError) as caught:
        vm_key_client(twin, vm).release_key(name, mint_guest_token(twin, vm))
    assert caught.value.error.message.endswith("Unmet claim conditions: x-ms-isolation-tee.x-ms-sevsnpvm-familyId.")


def test_release_policy_data_round_trips_through_the_response(twin: Twin) -> None:
    policy = cvm_policy(twin.urls.maa + "/", {"claim": "x-ms-attestation-type", "equals": "azurevm"},
                        {"claim": "secureboot", "equals": "true"})
    vm = new_vm(twin)
    name = exportable_key(twin, policy)
    grant_release(twin, vm, name)
    _, payload = jwt_parts(vm_key_client(twin, vm).release_key(name, mint_guest_token(twin, vm)).value)
    assert b64url_json(payload["response"]["key"]["release_policy"]["data"]) == json.loads(policy)
