"""Compact JWS (RS256) helpers shared by the twin's MAA and Key Vault release.

Written against ``cryptography`` directly: the twin needs exact control over headers
(``jku``, ``x5c``, ``x5t``) and must be able to corrupt a signature on purpose (fault injection).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class JwsError(ValueError):
    """A compact JWS that cannot be parsed or whose signature does not verify."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise JwsError(f"invalid base64url: {exc}") from exc


def b64url_uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def rsa_public_jwk(key: rsa.RSAPublicKey, **extra: Any) -> dict[str, Any]:
    numbers = key.public_numbers()
    return {**extra, "kty": "RSA", "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}


def rsa_public_from_jwk(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    n = int.from_bytes(b64url_decode(str(jwk["n"])), "big")
    e = int.from_bytes(b64url_decode(str(jwk["e"])), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def cert_der_b64(cert: x509.Certificate) -> str:
    """Standard base64 of the DER, as in ``x5c``."""
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


def thumbprints(cert: x509.Certificate) -> dict[str, str]:
    der = cert.public_bytes(serialization.Encoding.DER)
    sha1 = hashlib.sha1(der).digest()  # noqa: S324 - x5t is defined as SHA-1
    return {"kid": sha1.hex().upper(), "x5t": b64url(sha1), "x5t#S256": b64url(hashlib.sha256(der).digest())}


def sign_compact(header: dict[str, Any], payload: dict[str, Any], key: rsa.RSAPrivateKey,
                 *, corrupt: bool = False) -> str:
    """RS256-sign; ``corrupt`` flips signature bits (a signature no key verifies)."""
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(payload, separators=(",", ":")).encode())
    )
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    if corrupt:
        signature = bytes(b ^ 0x5A for b in signature)
    return signing_input + "." + b64url(signature)


def parse_compact(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Split and decode; returns (header, payload, signing_input, signature)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise JwsError("not a compact JWS: expected three dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        payload = json.loads(b64url_decode(parts[1]))
    except ValueError as exc:
        raise JwsError(f"JWS header or payload is not JSON: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise JwsError("JWS header and payload must be JSON objects")
    return header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), b64url_decode(parts[2])


def verify_rs256(token: str, key: rsa.RSAPublicKey) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, signing_input, signature = parse_compact(token)
    if header.get("alg") != "RS256":
        raise JwsError(f"unsupported JWS alg {header.get('alg')!r}")
    try:
        key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise JwsError("JWS signature does not verify") from exc
    return header, payload
