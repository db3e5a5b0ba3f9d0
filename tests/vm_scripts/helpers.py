"""Shared helpers for the in-VM script tests: load the script as a module, make certificates."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
LINUX_SCRIPT = ROOT / "vm_scripts" / "linux" / "skr_release.py"
WINDOWS_SCRIPT = ROOT / "vm_scripts" / "windows" / "skr_release.ps1"
PYTHON38 = Path("/root/.pyenv/versions/3.8.18/bin/python3.8")


def load_script() -> ModuleType:
    """The Linux script imported as a module (its ``main`` only runs under ``__main__``)."""
    name = "skr_release_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LINUX_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_cert(subject: str, key: Any, issuer: x509.Certificate | None, issuer_key: Any, *, ca: bool,
              sans: tuple[str, ...] = (), not_before: dt.datetime | None = None,
              not_after: dt.datetime | None = None, hash_alg: hashes.HashAlgorithm | None = None,
              basic_constraints: bool = True, key_cert_sign: bool | None = None,
              digital_signature: bool = True) -> x509.Certificate:
    """A certificate for ``key`` issued by ``issuer`` (self-signed when issuer is None)."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer.subject if issuer is not None else name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(hours=1))
        .not_valid_after(not_after or now + dt.timedelta(days=30))
        .add_extension(x509.KeyUsage(digital_signature=digital_signature,
                                     key_cert_sign=ca if key_cert_sign is None else key_cert_sign,
                                     crl_sign=ca, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, encipher_only=False,
                                     decipher_only=False), critical=True)
    )
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if sans:
        import ipaddress

        names: list[x509.GeneralName] = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key if issuer_key is not None else key, hash_alg or hashes.SHA256())


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def sign_jws(header: dict[str, Any], payload: dict[str, Any], key: rsa.RSAPrivateKey,
             hash_alg: hashes.HashAlgorithm | None = None) -> str:
    signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode()))
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hash_alg or hashes.SHA256())
    return signing_input + "." + b64url(signature)


def x5c_header(chain: list[x509.Certificate], alg: str = "RS256") -> dict[str, Any]:
    return {"alg": alg, "typ": "JWT", "x5c": [base64.b64encode(der(c)).decode() for c in chain],
            "x5t#S256": b64url(hashlib.sha256(der(chain[0])).digest())}


def key_hsm(kid: str = "TpmEphemeralEncryptionKey", enc: str = "CKM_RSA_AES_KEY_WRAP") -> str:
    blob = {"schema_version": "1.0", "header": {"kid": kid, "alg": "dir", "enc": enc},
            "ciphertext": b64url(b"\x01" * 300)}
    return b64url(json.dumps(blob).encode())
