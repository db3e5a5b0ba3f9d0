"""Key Vault's ``key_hsm`` export blob (reference skr_flow.md §5).

``ciphertext`` = RSA-OAEP(KEK, fresh AES-256 key) || RFC 5649 AES key wrap with padding of the
PKCS#8 DER private key; the OAEP/MGF1 hash follows ``enc``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from localdev.twin.jws import b64url

ENC_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "CKM_RSA_AES_KEY_WRAP": hashes.SHA1,
    "RSA_AES_KEY_WRAP_256": hashes.SHA256,
    "RSA_AES_KEY_WRAP_384": hashes.SHA384,
}
DEFAULT_ENC = "CKM_RSA_AES_KEY_WRAP"


def pkcs8_der(private_key: object) -> bytes:
    if not isinstance(private_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise TypeError(f"cannot export key material of type {type(private_key).__name__}")
    return private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def wrap_for_kek(kek: rsa.RSAPublicKey, plaintext: bytes, enc: str) -> bytes:
    hash_type = ENC_HASHES[enc]
    aes_key = os.urandom(32)
    wrapped_key = kek.encrypt(
        aes_key, padding.OAEP(mgf=padding.MGF1(algorithm=hash_type()), algorithm=hash_type(), label=None)
    )
    return wrapped_key + aes_key_wrap_with_padding(aes_key, plaintext)


def build_key_hsm(kek: rsa.RSAPublicKey, kek_kid: str, private_key: object, enc: str) -> str:
    """The base64url ``key_hsm`` string carried in the released JWK."""
    blob: dict[str, Any] = {
        "schema_version": "1.0",
        "header": {"kid": kek_kid, "alg": "dir", "enc": enc},
        "ciphertext": b64url(wrap_for_kek(kek, pkcs8_der(private_key), enc)),
    }
    return b64url(json.dumps(blob, separators=(",", ":")).encode())
