"""The script's stdlib X.509 / signature code against certificates and signatures made by ``cryptography``."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey, RSAKey

from tests.vm_scripts.helpers import (
    b64url,
    der,
    ec_key,
    key_hsm,
    load_script,
    make_cert,
    pem,
    rsa_key,
    sign_jws,
    x5c_header,
)

S = load_script()
NOW = time.time()
VAULT = "https://myvault.vault.azure.net"
KEK = "TpmEphemeralEncryptionKey"


@pytest.fixture(scope="module")
def pki() -> dict:
    """root (EC P-256) -> issuing CA (RSA) -> leaf (RSA, SAN *.vault.azure.net + 127.0.0.1)."""
    root_key = ec_key()
    root = make_cert("Test Root", root_key, None, None, ca=True)
    issuing_key = rsa_key()
    issuing = make_cert("Test Issuing CA", issuing_key, root, root_key, ca=True, hash_alg=hashes.SHA384())
    leaf_key = rsa_key()
    leaf = make_cert("vault.azure.net", leaf_key, issuing, issuing_key, ca=False,
                     sans=("vault.azure.net", "*.vault.azure.net", "127.0.0.1"))
    return {"root": root, "root_key": root_key, "issuing": issuing, "issuing_key": issuing_key,
            "leaf": leaf, "leaf_key": leaf_key}


def parsed(*certs):
    return [S.parse_cert(der(c)) for c in certs]


# ------------------------------------------------------------------------------------- DER
def test_cert_fields_match_cryptography(pki):
    leaf = S.parse_cert(der(pki["leaf"]))
    numbers = pki["leaf_key"].public_key().public_numbers()
    assert leaf.rsa_key == (numbers.n, numbers.e)
    assert leaf.ec_key is None
    assert leaf.sig_alg == "1.2.840.113549.1.1.11"
    assert leaf.is_ca is False
    assert leaf.dns_names == ["vault.azure.net", "*.vault.azure.net"]
    assert leaf.ip_addresses == [bytes([127, 0, 0, 1])]
    assert leaf.not_before == pki["leaf"].not_valid_before_utc.timestamp()
    assert leaf.not_after == pki["leaf"].not_valid_after_utc.timestamp()
    assert leaf.issuer == pki["issuing"].subject.public_bytes()
    assert leaf.subject == pki["leaf"].subject.public_bytes()
    assert leaf.tbs == pki["leaf"].tbs_certificate_bytes
    root = S.parse_cert(der(pki["root"]))
    point = pki["root_key"].public_key().public_numbers()
    assert root.ec_key == ("1.2.840.10045.3.1.7", (point.x, point.y))
    assert root.is_ca is True and root.key_usage & S.KU_KEY_CERT_SIGN


@pytest.mark.parametrize("blob", [b"", b"\x30", b"\x30\x05\x02\x01", b"\x04\x00", b"\x30\x84\xff\xff\xff\xff",
                                  b"\x30\x03\x02\x01\x01"])
def test_malformed_der_is_a_verify_error(blob):
    with pytest.raises(S.VerifyError) as err:
        S.parse_cert(blob)
    assert err.value.code == "bad_der"


def test_truncated_certificate_is_rejected(pki):
    with pytest.raises(S.VerifyError):
        S.parse_cert(der(pki["leaf"])[:-10])


def test_der_time_formats():
    assert S.der_time(0x17, b"491231235959Z") == dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    assert S.der_time(0x17, b"500101000000Z") == dt.datetime(1950, 1, 1, tzinfo=dt.UTC).timestamp()
    assert S.der_time(0x18, b"21060207062815Z") == dt.datetime(2106, 2, 7, 6, 28, 15, tzinfo=dt.UTC).timestamp()
    with pytest.raises(S.VerifyError):
        S.der_time(0x18, b"20240101000000.5Z")


# ------------------------------------------------------------------------------- signatures
@pytest.mark.parametrize("alg", [hashes.SHA256(), hashes.SHA384(), hashes.SHA512()])
def test_rsa_pkcs1v15_verify(alg):
    key = rsa_key()
    numbers = key.public_key().public_numbers()
    message = b"signing input"
    signature = key.sign(message, padding.PKCS1v15(), alg)
    assert S.rsa_pkcs1v15_verify((numbers.n, numbers.e), alg.name, message, signature)
    assert not S.rsa_pkcs1v15_verify((numbers.n, numbers.e), alg.name, message + b"!", signature)
    assert not S.rsa_pkcs1v15_verify((numbers.n, numbers.e), alg.name, message, signature[:-1])
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not S.rsa_pkcs1v15_verify((numbers.n, numbers.e), alg.name, message, tampered)
    # PSS signatures are a different encoding and must not pass as PKCS#1 v1.5
    pss = key.sign(message, padding.PSS(padding.MGF1(alg), 32), alg)
    assert not S.rsa_pkcs1v15_verify((numbers.n, numbers.e), alg.name, message, pss)


@pytest.mark.parametrize(("curve", "oid", "alg"), [
    (ec.SECP256R1(), "1.2.840.10045.3.1.7", hashes.SHA256()),
    (ec.SECP256R1(), "1.2.840.10045.3.1.7", hashes.SHA384()),
    (ec.SECP384R1(), "1.3.132.0.34", hashes.SHA384()),
    (ec.SECP384R1(), "1.3.132.0.34", hashes.SHA256()),
])
def test_ecdsa_verify(curve, oid, alg):
    key = ec_key(curve)
    point = key.public_key().public_numbers()
    message = b"to be signed"
    signature = key.sign(message, ec.ECDSA(alg))
    public = (oid, (point.x, point.y))
    assert S.ecdsa_verify(public, alg.name, message, signature)
    assert not S.ecdsa_verify(public, alg.name, message + b".", signature)
    r, s = utils.decode_dss_signature(signature)
    n = S.CURVES[oid][4]
    assert not S.ecdsa_verify(public, alg.name, message, utils.encode_dss_signature(r, (s + 1) % n))
    assert not S.ecdsa_verify(public, alg.name, message, utils.encode_dss_signature(0, s))
    assert not S.ecdsa_verify(public, alg.name, message, b"\x30\x00")


@settings(max_examples=10, deadline=None)
@given(st.integers(min_value=1, max_value=2**256))
def test_curve_constants_match_cryptography(scalar):
    """d*G computed by the script equals the public key cryptography derives from d (both curves)."""
    for curve, oid in ((ec.SECP256R1(), "1.2.840.10045.3.1.7"), (ec.SECP384R1(), "1.3.132.0.34")):
        p, _, gx, gy, n = S.CURVES[oid]
        d = scalar % (n - 1) + 1
        numbers = ec.derive_private_key(d, curve).public_key().public_numbers()
        assert S._ec_mul(p, d, (gx, gy)) == (numbers.x, numbers.y)
        assert S.ec_on_curve(S.CURVES[oid], (numbers.x, numbers.y))
    assert S._ec_mul(p, n, (gx, gy)) is None


# ------------------------------------------------------------------------------------ chains
def test_chain_to_anchor_by_signature_and_by_identity(pki):
    anchors = parsed(pki["root"])
    S.verify_chain(parsed(pki["leaf"], pki["issuing"]), anchors, NOW)  # last signed by an anchor
    S.verify_chain(parsed(pki["leaf"], pki["issuing"], pki["root"]), anchors, NOW)  # last is the anchor
    S.verify_chain(parsed(pki["leaf"]), parsed(pki["issuing"]), NOW)  # intermediate as anchor


def test_chain_rejections(pki):
    anchors = parsed(pki["root"])

    def code(chain, trusted=anchors, now=NOW):
        with pytest.raises(S.VerifyError) as err:
            S.verify_chain(chain, trusted, now)
        return err.value.code

    # wrong order
    assert code(parsed(pki["issuing"], pki["leaf"])) == "jws_untrusted_chain"
    # leaf alone: its issuer is not an anchor
    assert code(parsed(pki["leaf"])) == "jws_untrusted_chain"
    # no anchors at all
    assert code(parsed(pki["leaf"], pki["issuing"], pki["root"]), trusted=[]) == "jws_untrusted_chain"
    # outside validity
    assert code(parsed(pki["leaf"], pki["issuing"]), now=NOW + 400 * 86400) == "jws_cert_expired"
    assert code(parsed(pki["leaf"], pki["issuing"]), now=NOW - 86400) == "jws_cert_expired"
    # same names, different root key (a look-alike root)
    rogue_key = ec_key()
    rogue_root = make_cert("Test Root", rogue_key, None, None, ca=True)
    rogue_issuing = make_cert("Test Issuing CA", pki["issuing_key"], rogue_root, rogue_key, ca=True)
    assert code(parsed(pki["leaf"], rogue_issuing, rogue_root)) == "jws_untrusted_chain"
    assert code(parsed(pki["leaf"], rogue_issuing)) == "jws_untrusted_chain"


def test_issuer_must_be_a_ca(pki):
    anchors = parsed(pki["root"])
    not_ca = make_cert("Test Issuing CA", pki["issuing_key"], pki["root"], pki["root_key"], ca=False)
    no_bc = make_cert("Test Issuing CA", pki["issuing_key"], pki["root"], pki["root_key"], ca=True,
                      basic_constraints=False)
    no_cert_sign = make_cert("Test Issuing CA", pki["issuing_key"], pki["root"], pki["root_key"], ca=True,
                             key_cert_sign=False)
    for bad in (not_ca, no_bc, no_cert_sign):
        with pytest.raises(S.VerifyError) as err:
            S.verify_chain(parsed(pki["leaf"], bad), anchors, NOW)
        assert err.value.code == "jws_untrusted_chain"


def test_weak_or_unsupported_signature_algorithms_are_refused(pki):
    issuing = S.parse_cert(der(pki["issuing"]))
    leaf = S.parse_cert(der(pki["leaf"]))
    assert S._signed_by(leaf, issuing)
    leaf.sig_alg = "1.2.840.113549.1.1.5"  # sha1WithRSAEncryption (cryptography refuses to make one)
    assert not S._signed_by(leaf, issuing)
    pss_cert = (x509.CertificateBuilder().subject_name(pki["leaf"].subject).issuer_name(pki["issuing"].subject)
                .public_key(pki["leaf_key"].public_key()).serial_number(1)
                .not_valid_before(pki["leaf"].not_valid_before_utc).not_valid_after(pki["leaf"].not_valid_after_utc)
                .sign(pki["issuing_key"], hashes.SHA256(),
                      rsa_padding=padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)))
    pss = S.parse_cert(der(pss_cert))
    assert pss.sig_alg == "1.2.840.113549.1.1.10"  # RSASSA-PSS
    assert not S._signed_by(pss, issuing)
    with pytest.raises(S.VerifyError):
        S.verify_chain([pss, issuing], parsed(pki["root"]), NOW)


def test_trust_anchors_from_bundle_and_system(tmp_path, pki):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"junk before\n" + pem(pki["root"], pki["issuing"], pki["root"])
                       + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    anchors = S.load_trust_anchors(str(bundle))
    assert [a.der for a in anchors] == [der(pki["root"]), der(pki["issuing"])]
    system = S.load_trust_anchors("")
    assert len(system) > 50  # the OS store (Debian/Ubuntu ca-certificates)
    assert not any(a.der == der(pki["root"]) for a in system)


@pytest.mark.parametrize(("host", "covered"), [
    ("myvault.vault.azure.net", True), ("vault.azure.net", True), ("127.0.0.1", True), ("[127.0.0.1]", True),
    ("a.b.vault.azure.net", False), ("myvault.vault.azure.net.evil.com", False), ("127.0.0.2", False),
    ("::1", False), ("managedhsm.azure.net", False),
])
def test_cert_covers_host(pki, host, covered):
    assert S.cert_covers_host(S.parse_cert(der(pki["leaf"])), host) is covered


# -------------------------------------------------------------------------------------- JWS
def payload(kid: str = f"{VAULT}/keys/cvm-a/0123456789abcdef0123456789abcdef", kek: str = KEK,
            enc: str = "CKM_RSA_AES_KEY_WRAP") -> dict:
    return {"request": {"api-version": "7.4", "enc": "CKM_RSA_AES_KEY_WRAP", "kid": f"{VAULT}/keys/cvm-a"},
            "response": {"key": {"key": {"kid": kid, "kty": "RSA-HSM", "n": b64url(b"\x00\xc1" + b"\x02" * 255),
                                         "e": "AQAB", "key_hsm": key_hsm(kek, enc)}}}}


def test_release_jws_verifies_and_rejects(tmp_path, pki):
    anchors = parsed(pki["root"])
    chain = [pki["leaf"], pki["issuing"], pki["root"]]
    good = sign_jws(x5c_header(chain), payload(), pki["leaf_key"])
    assert S.verify_release_jws(good, anchors, NOW, "myvault.vault.azure.net") == payload()
    for alg, hash_alg in (("RS384", hashes.SHA384()), ("RS512", hashes.SHA512())):
        jws = sign_jws(x5c_header(chain, alg), payload(), pki["leaf_key"], hash_alg)
        assert S.verify_release_jws(jws, anchors, NOW, "myvault.vault.azure.net")["request"]

    def code(jws, host="myvault.vault.azure.net", trusted=anchors):
        with pytest.raises(S.VerifyError) as err:
            S.verify_release_jws(jws, trusted, NOW, host)
        return err.value.code

    head, body, sig = good.split(".")
    bad_sig = b64url(bytes(b ^ 0x5A for b in base64.urlsafe_b64decode(sig + "==")))
    assert code(f"{head}.{body}.{bad_sig}") == "jws_bad_signature"
    tampered = b64url(json.dumps(payload(kid=f"{VAULT}/keys/other/1")).encode())
    assert code(f"{head}.{tampered}.{sig}") == "jws_bad_signature"
    assert code(good, trusted=[]) == "jws_untrusted_chain"
    assert code(good, host="evil.example.com") == "jws_wrong_signer"
    assert code("not a jws") == "jws_malformed"
    assert code(good + ".x") == "jws_malformed"
    assert code(sign_jws({"alg": "HS256", "x5c": x5c_header(chain)["x5c"]}, payload(), pki["leaf_key"])) \
        == "jws_malformed"
    assert code(sign_jws({"alg": "RS256"}, payload(), pki["leaf_key"])) == "jws_malformed"
    assert code(sign_jws({"alg": "RS256", "x5c": ["%%%"]}, payload(), pki["leaf_key"])) == "jws_malformed"
    wrong_thumb = dict(x5c_header(chain), **{"x5t#S256": b64url(hashlib.sha256(b"x").digest())})
    assert code(sign_jws(wrong_thumb, payload(), pki["leaf_key"])) == "jws_malformed"
    # signed by another key than x5c[0]
    assert code(sign_jws(x5c_header(chain), payload(), rsa_key())) == "jws_bad_signature"
    # an EC leaf cannot sign RS256
    ec_leaf_key = ec_key()
    ec_leaf = make_cert("vault.azure.net", ec_leaf_key, pki["issuing"], pki["issuing_key"], ca=False)
    assert code(sign_jws(x5c_header([ec_leaf, pki["issuing"]]), payload(), pki["leaf_key"])) == "jws_malformed"
    # a leaf that may not sign
    no_sign_leaf = make_cert("vault.azure.net", pki["leaf_key"], pki["issuing"], pki["issuing_key"], ca=False,
                             digital_signature=False, sans=("*.vault.azure.net",))
    assert code(sign_jws(x5c_header([no_sign_leaf, pki["issuing"]]), payload(), pki["leaf_key"])) \
        == "jws_untrusted_chain"


def params(**env):
    base = {"SKR_VAULT_URL": VAULT, "SKR_KEY_NAME": "cvm-a", "SKR_MAA_ENDPOINT": "https://maa.example.net",
            "SKR_OUTPUT_PATH": "/tmp/x/cvm-a.jws"}
    base.update(env)
    return S.load_params(base)


def test_release_payload_checks():
    key = S.check_release_payload(payload(), params())
    assert key["kid"].endswith("/0123456789abcdef0123456789abcdef")
    S.check_release_payload(payload(), params(SKR_KEY_VERSION="0123456789abcdef0123456789abcdef"))
    S.check_release_payload(payload(kid="https://MYVAULT.vault.azure.net:443/keys/CVM-A/v1"), params())

    def code(body, p=None):
        with pytest.raises(S.VerifyError) as err:
            S.check_release_payload(body, p or params())
        return err.value.code

    assert code(payload(kid=f"{VAULT}/keys/other/0123")) == "kid_mismatch"
    assert code(payload(kid="https://othervault.vault.azure.net/keys/cvm-a/0123")) == "kid_mismatch"
    assert code(payload(kid=f"{VAULT}/keys/cvm-a")) == "kid_mismatch"  # no version
    assert code(payload(), params(SKR_KEY_VERSION="ffff")) == "kid_mismatch"
    assert code(payload(kid="not a url")) == "jws_malformed"
    assert code({"response": {}}) == "jws_malformed"
    assert code(payload(kid="HCLAkPub")) == "jws_malformed"
    assert code(payload(kid=f"{VAULT}/keys/cvm-a/1", kek="HCLAkPub")) == "kek_mismatch"
    assert code(payload(kid=f"{VAULT}/keys/cvm-a/1", enc="RSA_AES_KEY_WRAP_256")) == "enc_mismatch"
    assert code(payload(), params(SKR_ENC="RSA_AES_KEY_WRAP_384")) == "enc_mismatch"
    broken = payload()
    broken["response"]["key"]["key"]["key_hsm"] = "!!"
    assert code(broken) == "jws_malformed"


def test_jwk_thumbprint_matches_rfc7638():
    key = rsa_key()
    jwk = RSAKey.import_key(key.public_key()).as_dict()
    assert S.jwk_thumbprint({**jwk, "kty": "RSA-HSM"}) == RSAKey.import_key(jwk).thumbprint()
    padded = {**jwk, "n": b64url(b"\x00" + base64.urlsafe_b64decode(jwk["n"] + "=="))}
    assert S.jwk_thumbprint(padded) == RSAKey.import_key(jwk).thumbprint()
    ecj = ECKey.import_key(ec_key().public_key()).as_dict()
    assert S.jwk_thumbprint({**ecj, "kty": "EC-HSM"}) == ECKey.import_key(ecj).thumbprint()
    assert S.jwk_thumbprint({"kty": "oct-HSM"}) is None
    assert S.jwk_thumbprint({"kty": "RSA"}) is None
