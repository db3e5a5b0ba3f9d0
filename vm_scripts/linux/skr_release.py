#!/usr/bin/env python3
"""Secure Key Release from inside an Azure Confidential VM (run-command script).

Attest -> get a managed-identity token -> release the key -> verify the JWS -> keep it root-only,
then print exactly one line ``SKR-RESULT {json}`` and exit 0 (released), 2 (retryable) or 3
(terminal). The contract (parameters, result schema, exit codes, files) is ``vm_scripts/README.md``.

This is the only code of the product that handles released key material, so it is deliberately
small, strict and standard-library only (Python 3.8+, stock Ubuntu CVM images). Secrets - the MAA
token, the access token, the JWS and anything derived from its payload except public key
fingerprints - are kept in local variables and never printed, logged or written anywhere except
the JWS file itself.

Time is read only through ``time.time()``, ``time.monotonic()`` and ``time.sleep()`` (the local
Azure twin virtualises exactly these three in the script's process).
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import hashlib
import hmac
import http.client
import ipaddress
import json
import os
import re
import shlex
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

SCRIPT_VERSION = "1.0"
RESULT_PREFIX = "SKR-RESULT "
MAX_RESULT_BYTES = 1024

EXIT_RELEASED = 0
EXIT_RETRYABLE = 2
EXIT_TERMINAL = 3

ENC_VALUES = ("CKM_RSA_AES_KEY_WRAP", "RSA_AES_KEY_WRAP_256", "RSA_AES_KEY_WRAP_384")
MODES = ("rest", "azureattestskr")
KEK_KID = "TpmEphemeralEncryptionKey"
DEFAULT_OUTPUT_DIR = "/var/lib/skr-orchestrator/keys"
DEFAULT_ATTESTATION_COMMAND = "AttestationClient -a {maa} -o token"
DEFAULT_AZUREATTESTSKR_COMMAND = "AzureAttestSKR"
IMDS_API_VERSION = "2018-02-01"
USER_AGENT = "skr-orchestrator-vm/" + SCRIPT_VERSION

# In-window retry schedule (ForbiddenByRbac, 429, 5xx, connection errors): 2, 4, 8, then 10 s.
RETRY_FIRST_DELAY = 2.0
RETRY_MAX_DELAY = 10.0
# IMDS: 5 tries, 1/2/4/8 s apart (the IMDS doc recommends retrying 404/410/429/5xx with backoff).
IMDS_DELAYS = (1.0, 2.0, 4.0, 8.0)
IMDS_RETRY_STATUSES = (404, 410, 429)
# Re-attest / re-fetch a token that has less than this many seconds left.
TOKEN_MIN_REMAINING = 60.0
HTTP_TIMEOUT = 30.0
MAX_BODY = 1 << 20


# --------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------


class SkrError(Exception):
    """A classified failure; becomes the result line. ``message`` must never carry a secret."""

    def __init__(self, outcome: str, error_code: str, message: str = "", *,
                 http_status: Optional[int] = None, retryable: bool = False,
                 retry_in_window: bool = False, retry_after: Optional[float] = None) -> None:
        super().__init__(error_code)
        self.outcome = outcome
        self.error_code = error_code
        self.message = message
        self.http_status = http_status
        # retryable: the orchestrator may run the script again (exit code 2).
        self.retryable = retryable or retry_in_window
        # retry_in_window: this script itself retries it until the retry window ends.
        self.retry_in_window = retry_in_window
        self.retry_after = retry_after


_SECRETISH = re.compile(r"eyJ[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*)*|[A-Za-z0-9+/_\-=]{32,}")


def sanitize(text: str, limit: int = 300) -> str:
    """One short printable line from a service's error text, with anything token-like redacted.

    Defence in depth: we only ever pass error bodies through here, but a JWT (``eyJ...``) or a
    long mixed-case base64 run is replaced, so even a misbehaving tool cannot leak one.
    """

    def redact(match: "re.Match[str]") -> str:
        run = match.group(0)
        if run.startswith("eyJ"):
            return "[redacted]"
        mixed = (re.search(r"[A-Z]", run) and re.search(r"[a-z]", run) and re.search(r"[0-9]", run))
        return "[redacted]" if mixed else run

    flat = " ".join(text.replace("\\r\\n", " ").replace("\\n", " ").split())
    flat = "".join(ch for ch in flat if 32 <= ord(ch) < 127)
    flat = _SECRETISH.sub(redact, flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def error_code_of(text: str) -> str:
    """A service's error code as a short identifier: [A-Za-z0-9_.:-], at most 64 characters."""
    return re.sub(r"[^A-Za-z0-9_.:\-]", "_", text)[:64] or "unknown"


# --------------------------------------------------------------------------------------------
# Parameters (run-command named parameters arrive as environment variables)
# --------------------------------------------------------------------------------------------


class Params(NamedTuple):
    vault_url: str  # https://host[:port], no trailing slash
    key_name: str
    key_version: str  # "" = latest
    maa_endpoint: str  # https://host[:port]
    mode: str
    retry_window: float
    output_path: str
    enc: str
    imds_url: str
    ca_bundle: str  # "" = system trust store
    attestation_command: List[str]
    azureattestskr_command: List[str]
    api_version: str
    imds_resource: str
    imds_client_id: str
    tool_timeout: float


class ParamError(Exception):
    def __init__(self, code: str, name: str, why: str) -> None:
        super().__init__(code)
        self.code = code
        self.text = name + ": " + why


def _https_origin(name: str, value: str, schemes: Tuple[str, ...] = ("https",)) -> str:
    """Validate a base URL (scheme://host[:port], optional '/') and return it without the slash."""
    if len(value) > 256:
        raise ParamError("invalid_parameter", name, "longer than 256 characters")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ParamError("invalid_parameter", name, "not a valid URL") from None
    if parts.scheme.lower() not in schemes:
        raise ParamError("invalid_parameter", name, "must be an " + "/".join(schemes) + " URL")
    if not parts.hostname or parts.username or parts.password:
        raise ParamError("invalid_parameter", name, "must name a host (and no credentials)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ParamError("invalid_parameter", name, "must be a base URL without path or query")
    host = parts.hostname.lower()
    if not re.match(r"^[a-z0-9.\-]+$", host) and ":" not in host:
        raise ParamError("invalid_parameter", name, "host name has invalid characters")
    host = "[" + host + "]" if ":" in host else host
    return parts.scheme.lower() + "://" + host + (":" + str(port) if port is not None else "")


def _command(name: str, value: str) -> List[str]:
    try:
        argv = shlex.split(value)
    except ValueError:
        raise ParamError("invalid_parameter", name, "cannot be split into arguments") from None
    if not argv:
        raise ParamError("invalid_parameter", name, "is empty")
    return argv


def load_params(env: Mapping[str, str]) -> Params:
    """Read and validate every parameter before anything touches the network."""

    def get(name: str, default: str = "") -> str:
        value = env.get(name, "").strip()
        return value if value else default

    def required(name: str) -> str:
        value = get(name)
        if not value:
            raise ParamError("missing_parameter", name, "is required")
        return value

    vault_url = _https_origin("SKR_VAULT_URL", required("SKR_VAULT_URL"))
    key_name = required("SKR_KEY_NAME")
    if not re.match(r"^[0-9A-Za-z-]{1,127}$", key_name):
        raise ParamError("invalid_parameter", "SKR_KEY_NAME", "must be 1-127 letters, digits or '-'")
    key_version = get("SKR_KEY_VERSION")
    if key_version and not re.match(r"^[0-9A-Za-z]{1,64}$", key_version):
        raise ParamError("invalid_parameter", "SKR_KEY_VERSION", "must be letters and digits only")
    maa = _https_origin("SKR_MAA_ENDPOINT", required("SKR_MAA_ENDPOINT"))
    mode = get("SKR_MODE", "rest").lower()
    if mode not in MODES:
        raise ParamError("invalid_parameter", "SKR_MODE", "must be one of " + ", ".join(MODES))
    window = _number("SKR_RETRY_WINDOW_SECONDS", get("SKR_RETRY_WINDOW_SECONDS", "90"), 0, 3600)
    output_path = get("SKR_OUTPUT_PATH", DEFAULT_OUTPUT_DIR + "/" + key_name + ".jws")
    if not os.path.isabs(output_path) or output_path.endswith("/") or "\x00" in output_path:
        raise ParamError("invalid_parameter", "SKR_OUTPUT_PATH", "must be an absolute file path")
    enc = get("SKR_ENC", ENC_VALUES[0])
    if enc not in ENC_VALUES:
        raise ParamError("invalid_parameter", "SKR_ENC", "must be one of " + ", ".join(ENC_VALUES))
    imds_url = _https_origin("SKR_IMDS_URL", get("SKR_IMDS_URL", "http://169.254.169.254"),
                             ("http", "https"))
    ca_bundle = get("SKR_CA_BUNDLE")
    if ca_bundle and not _has_certificate(ca_bundle):
        raise ParamError("invalid_parameter", "SKR_CA_BUNDLE", "is not a readable PEM file with a certificate")
    api_version = get("SKR_KEYVAULT_API_VERSION", "7.4")
    if not re.match(r"^(7\.([3-9]|[1-9][0-9])|([89]|[1-9][0-9]+)\.[0-9]+|20[0-9]{2}-[0-9]{2}-[0-9]{2})(-preview)?$",
                    api_version):
        raise ParamError("invalid_parameter", "SKR_KEYVAULT_API_VERSION", "must be 7.3 or later")
    resource = get("SKR_IMDS_RESOURCE")
    if resource:
        resource = _https_origin("SKR_IMDS_RESOURCE", resource)
    elif "managedhsm" in vault_url:
        resource = "https://managedhsm.azure.net"
    else:
        resource = "https://vault.azure.net"
    client_id = get("SKR_IMDS_CLIENT_ID")
    if client_id and not re.match(r"^[0-9A-Fa-f-]{36}$", client_id):
        raise ParamError("invalid_parameter", "SKR_IMDS_CLIENT_ID", "must be a GUID")
    return Params(
        vault_url=vault_url, key_name=key_name, key_version=key_version, maa_endpoint=maa,
        mode=mode, retry_window=window, output_path=output_path, enc=enc, imds_url=imds_url,
        ca_bundle=ca_bundle,
        attestation_command=_command("SKR_ATTESTATION_COMMAND",
                                     get("SKR_ATTESTATION_COMMAND", DEFAULT_ATTESTATION_COMMAND)),
        azureattestskr_command=_command("SKR_AZUREATTESTSKR_COMMAND",
                                        get("SKR_AZUREATTESTSKR_COMMAND",
                                            DEFAULT_AZUREATTESTSKR_COMMAND)),
        api_version=api_version, imds_resource=resource, imds_client_id=client_id,
        tool_timeout=_number("SKR_TOOL_TIMEOUT_SECONDS", get("SKR_TOOL_TIMEOUT_SECONDS", "300"),
                             1, 5400),
    )


def _has_certificate(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return b"-----BEGIN CERTIFICATE-----" in handle.read()
    except OSError:
        return False


def _number(name: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ParamError("invalid_parameter", name, "must be a number") from None
    if not low <= value <= high:  # also rejects nan
        raise ParamError("invalid_parameter", name, "must be between %g and %g" % (low, high))
    return value


def requested_key_id(p: Params) -> str:
    return p.vault_url + "/keys/" + p.key_name + ("/" + p.key_version if p.key_version else "")


# --------------------------------------------------------------------------------------------
# JWT / base64url helpers
# --------------------------------------------------------------------------------------------


def b64url_decode(text: str) -> bytes:
    if not re.match(r"^[A-Za-z0-9_\-]*$", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_compact(token: str) -> Tuple[Dict[str, Any], Dict[str, Any], List[str]]:
    """Split a compact JWS/JWT into (header, payload, parts); ValueError if it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise ValueError("expected three non-empty dot-separated parts")
    header = json.loads(b64url_decode(parts[0]).decode("utf-8"))
    payload = json.loads(b64url_decode(parts[1]).decode("utf-8"))
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise ValueError("header and payload must be JSON objects")
    b64url_decode(parts[2])
    return header, payload, parts


def check_attestation_output(output: str, now: float) -> Tuple[str, float]:
    """Return (token, exp) if the attestation client printed a valid, unexpired JWT.

    The real AttestationClient prints an error description on stdout and still exits 0, so the
    output itself is the only reliable signal.
    """
    token = output.strip()
    if not token:
        raise SkrError("attestation_failed", "empty_output", "attestation command printed nothing")
    if not token.startswith("eyJ") or any(c.isspace() for c in token):
        first = token.splitlines()[0] if token.splitlines() else ""
        raise SkrError("attestation_failed", "not_a_token",
                       "attestation command output is not a token: " + sanitize(first, 160))
    try:
        header, payload, _ = decode_compact(token)
    except (ValueError, UnicodeDecodeError):
        raise SkrError("attestation_failed", "malformed_token",
                       "attestation output is not a well-formed JWT") from None
    if not isinstance(header.get("alg"), str):
        raise SkrError("attestation_failed", "malformed_token", "JWT header has no alg")
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise SkrError("attestation_failed", "malformed_token", "JWT has no numeric exp claim")
    if exp <= now:
        raise SkrError("attestation_failed", "token_expired", "attestation token has expired")
    return token, float(exp)


# --------------------------------------------------------------------------------------------
# Minimal DER / X.509 reader, RSA PKCS#1 v1.5 and ECDSA verification (for the release JWS)
#
# Why not `ssl`: the ssl module verifies chains only inside a TLS handshake; it has no API to
# verify an arbitrary x5c chain offline, and `cryptography` is not on stock images. X.509 needs
# only a few DER shapes, RSA verification is one pow() and ECDSA (for EC CAs) two scalar
# multiplications; all are short enough to audit. Only public data is processed, so the
# arithmetic need not be constant-time.
# --------------------------------------------------------------------------------------------


class VerifyError(Exception):
    def __init__(self, code: str, why: str) -> None:
        super().__init__(code)
        self.code = code
        self.why = why


class Tlv(NamedTuple):
    tag: int
    start: int  # offset of the tag byte
    vstart: int  # offset of the value
    end: int  # offset just past the value


def der_children(data: bytes, start: int, end: int) -> List[Tlv]:
    """Split data[start:end] into consecutive TLVs (definite lengths, low tag numbers only)."""
    items = []
    pos = start
    while pos < end:
        if end - pos < 2:
            raise VerifyError("bad_der", "truncated DER")
        tag, length = data[pos], data[pos + 1]
        head = pos + 2
        if tag & 0x1F == 0x1F:
            raise VerifyError("bad_der", "high tag numbers are not used in certificates")
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4 or head + count > end:
                raise VerifyError("bad_der", "bad DER length")
            length = int.from_bytes(data[head:head + count], "big")
            head += count
        if head + length > end:
            raise VerifyError("bad_der", "DER value runs past its container")
        items.append(Tlv(tag, pos, head, head + length))
        pos = head + length
    return items


def der_oid(value: bytes) -> str:
    arcs = []
    acc = 0
    for byte in value:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    if not arcs:
        raise VerifyError("bad_der", "empty OID")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])


def der_uint(value: bytes) -> int:
    if not value or value[0] & 0x80:
        raise VerifyError("bad_der", "expected a positive INTEGER")
    return int.from_bytes(value, "big")


def der_time(tag: int, value: bytes) -> float:
    """UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) as epoch seconds."""
    text = value.decode("ascii", "replace")
    if tag == 0x17 and re.match(r"^[0-9]{12}Z$", text):
        year = int(text[:2])
        year += 1900 if year >= 50 else 2000
        rest = text[2:]
    elif tag == 0x18 and re.match(r"^[0-9]{14}Z$", text):
        year, rest = int(text[:4]), text[4:]
    else:
        raise VerifyError("bad_der", "unsupported certificate time")
    fields = [int(rest[i:i + 2]) for i in range(0, 10, 2)]
    return float(calendar.timegm((year, fields[0], fields[1], fields[2], fields[3], fields[4], 0, 0, 0)))


OID_RSA = "1.2.840.113549.1.1.1"
OID_EC = "1.2.840.10045.2.1"
SIG_HASHES = {  # certificate signature algorithms; SHA-1, PSS and others are refused
    "1.2.840.113549.1.1.11": ("rsa", "sha256"),
    "1.2.840.113549.1.1.12": ("rsa", "sha384"),
    "1.2.840.113549.1.1.13": ("rsa", "sha512"),
    "1.2.840.10045.4.3.2": ("ecdsa", "sha256"),
    "1.2.840.10045.4.3.3": ("ecdsa", "sha384"),
    "1.2.840.10045.4.3.4": ("ecdsa", "sha512"),
}
# NIST curves (FIPS 186-4 D.1.2): p, b, Gx, Gy, n; a = p - 3 for both.
CURVES = {
    "1.2.840.10045.3.1.7": (  # P-256
        0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
        0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
        0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
        0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    "1.3.132.0.34": (  # P-384
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFFFF0000000000000000FFFFFFFF,
        0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF,
        0xAA87CA22BE8B05378EB1C71EF320AD746E1D3B628BA79B9859F741E082542A385502F25DBF55296C3A545E3872760AB7,
        0x3617DE4A96262C6F5D9E98BF9292DC29F8F41DBD289A147CE9DA3113B5F0B8C00A60B1CE1D7E819D7A431D7C90EA0E5F,
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
    ),
}
JWS_HASHES = {"RS256": "sha256", "RS384": "sha384", "RS512": "sha512"}
DIGEST_INFO = {  # DER DigestInfo prefixes from RFC 8017 §9.2
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


class Cert:
    """The few X.509 fields chain checking needs, read from the DER."""

    def __init__(self, der: bytes) -> None:
        self.der = der
        top = der_children(der, 0, len(der))
        if len(top) != 1 or top[0].tag != 0x30:
            raise VerifyError("bad_der", "a certificate is one SEQUENCE")
        outer = der_children(der, top[0].vstart, top[0].end)
        if len(outer) != 3 or outer[0].tag != 0x30 or outer[2].tag != 0x03:
            raise VerifyError("bad_der", "certificate must be tbsCertificate, algorithm, signature")
        tbs, alg, sig = outer
        self.tbs = der[tbs.start:tbs.end]
        self.sig_alg = self._alg_oid(der, alg)
        self.signature = self._bits(der, sig)
        fields = der_children(der, tbs.vstart, tbs.end)
        i = 1 if fields and fields[0].tag == 0xA0 else 0  # optional [0] version
        if len(fields) < i + 6:
            raise VerifyError("bad_der", "tbsCertificate is too short")
        if self._alg_oid(der, fields[i + 1]) != self.sig_alg:
            raise VerifyError("bad_der", "inner and outer signature algorithms differ")
        self.issuer = der[fields[i + 2].start:fields[i + 2].end]  # raw Name, compared byte-wise
        self.subject = der[fields[i + 4].start:fields[i + 4].end]
        validity = der_children(der, fields[i + 3].vstart, fields[i + 3].end)
        if len(validity) != 2:
            raise VerifyError("bad_der", "bad validity")
        self.not_before = der_time(validity[0].tag, der[validity[0].vstart:validity[0].end])
        self.not_after = der_time(validity[1].tag, der[validity[1].vstart:validity[1].end])
        self._public_key(der, fields[i + 5])
        self.is_ca: Optional[bool] = None
        self.key_usage: Optional[int] = None  # bits as an int, bit 0 = digitalSignature = 0x80..
        self.dns_names: List[str] = []
        self.ip_addresses: List[bytes] = []
        for item in fields[i + 6:]:
            if item.tag == 0xA3:  # [3] extensions
                seq = der_children(der, item.vstart, item.end)
                for ext in der_children(der, seq[0].vstart, seq[0].end) if seq else []:
                    self._extension(der, ext)

    @staticmethod
    def _alg_oid(der: bytes, alg: Tlv) -> str:
        parts = der_children(der, alg.vstart, alg.end)
        if not parts or parts[0].tag != 0x06:
            raise VerifyError("bad_der", "bad AlgorithmIdentifier")
        return der_oid(der[parts[0].vstart:parts[0].end])

    @staticmethod
    def _bits(der: bytes, bits: Tlv) -> bytes:
        if bits.end == bits.vstart or der[bits.vstart] != 0:
            raise VerifyError("bad_der", "bad BIT STRING")
        return der[bits.vstart + 1:bits.end]

    def _public_key(self, der: bytes, spki: Tlv) -> None:
        """RSA (n, e) or EC (curve OID, (x, y)) from subjectPublicKeyInfo; other kinds stay None."""
        self.rsa_key: Optional[Tuple[int, int]] = None
        self.ec_key: Optional[Tuple[str, Tuple[int, int]]] = None
        alg, key = der_children(der, spki.vstart, spki.end)[:2]
        alg_parts = der_children(der, alg.vstart, alg.end)
        oid = der_oid(der[alg_parts[0].vstart:alg_parts[0].end])
        raw = self._bits(der, key)
        if oid == OID_RSA:
            seq = der_children(raw, 0, len(raw))
            ints = der_children(raw, seq[0].vstart, seq[0].end) if seq else []
            if len(ints) != 2 or ints[0].tag != 0x02 or ints[1].tag != 0x02:
                raise VerifyError("bad_der", "bad RSAPublicKey")
            self.rsa_key = (der_uint(raw[ints[0].vstart:ints[0].end]), der_uint(raw[ints[1].vstart:ints[1].end]))
        elif oid == OID_EC and len(alg_parts) == 2 and alg_parts[1].tag == 0x06:
            curve = der_oid(der[alg_parts[1].vstart:alg_parts[1].end])
            size = (CURVES[curve][0].bit_length() + 7) // 8 if curve in CURVES else 0
            if size and len(raw) == 1 + 2 * size and raw[0] == 0x04:  # uncompressed point only
                point = (int.from_bytes(raw[1:1 + size], "big"), int.from_bytes(raw[1 + size:], "big"))
                if ec_on_curve(CURVES[curve], point):
                    self.ec_key = (curve, point)

    def _extension(self, der: bytes, ext: Tlv) -> None:
        parts = der_children(der, ext.vstart, ext.end)
        if len(parts) < 2 or parts[0].tag != 0x06 or parts[-1].tag != 0x04:
            raise VerifyError("bad_der", "bad extension")
        oid = der_oid(der[parts[0].vstart:parts[0].end])
        value = der[parts[-1].vstart:parts[-1].end]
        if oid == "2.5.29.19":  # basicConstraints: SEQUENCE { cA BOOLEAN DEFAULT FALSE, ... }
            seq = der_children(value, 0, len(value))
            inner = der_children(value, seq[0].vstart, seq[0].end) if seq else []
            self.is_ca = bool(inner and inner[0].tag == 0x01 and value[inner[0].vstart:inner[0].end]
                              not in (b"", b"\x00"))
        elif oid == "2.5.29.15":  # keyUsage BIT STRING
            bits = der_children(value, 0, len(value))
            raw = value[bits[0].vstart + 1:bits[0].end] if bits else b""
            self.key_usage = int.from_bytes((raw + b"\x00\x00")[:2], "big")
        elif oid == "2.5.29.17":  # subjectAltName: dNSName [2], iPAddress [7]
            seq = der_children(value, 0, len(value))
            for name in der_children(value, seq[0].vstart, seq[0].end) if seq else []:
                if name.tag == 0x82:
                    self.dns_names.append(value[name.vstart:name.end].decode("ascii", "replace").lower())
                elif name.tag == 0x87:
                    self.ip_addresses.append(value[name.vstart:name.end])


def parse_cert(der: bytes) -> Cert:
    """Cert(der), with any malformation reported as VerifyError("bad_der")."""
    try:
        return Cert(der)
    except (ValueError, IndexError, TypeError):
        raise VerifyError("bad_der", "malformed certificate") from None


KU_DIGITAL_SIGNATURE = 0x8000
KU_KEY_CERT_SIGN = 0x0400


def rsa_pkcs1v15_verify(key: Tuple[int, int], hash_name: str, message: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 verification (RFC 8017 §8.2.2): rebuild the encoded message and compare."""
    n, e = key
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    t = DIGEST_INFO[hash_name] + hashlib.new(hash_name, message).digest()
    if k < len(t) + 11:
        return False
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return hmac.compare_digest(pow(s, e, n).to_bytes(k, "big"), expected)


Point = Optional[Tuple[int, int]]  # None is the point at infinity


def ec_on_curve(curve: Tuple[int, int, int, int, int], point: Tuple[int, int]) -> bool:
    p, b = curve[0], curve[1]
    x, y = point
    return 0 <= x < p and 0 <= y < p and (y * y - (x * x * x - 3 * x + b)) % p == 0


def _ec_add(p: int, one: Point, two: Point) -> Point:
    """Affine point addition on y^2 = x^3 - 3x + b (pow(v, -1, p) needs Python 3.8+)."""
    if one is None:
        return two
    if two is None:
        return one
    (x1, y1), (x2, y2) = one, two
    if x1 == x2:
        if (y1 + y2) % p == 0:
            return None
        slope = (3 * x1 * x1 - 3) * pow(2 * y1, -1, p) % p
    else:
        slope = (y2 - y1) * pow(x2 - x1, -1, p) % p
    x3 = (slope * slope - x1 - x2) % p
    return x3, (slope * (x1 - x3) - y1) % p


def _ec_mul(p: int, k: int, point: Point) -> Point:
    result: Point = None
    while k:
        if k & 1:
            result = _ec_add(p, result, point)
        point = _ec_add(p, point, point)
        k >>= 1
    return result


def ecdsa_verify(key: Tuple[str, Tuple[int, int]], hash_name: str, message: bytes, signature: bytes) -> bool:
    """ECDSA verification (SEC 1 §4.1.4) of a DER Ecdsa-Sig-Value over a NIST curve."""
    p, _, gx, gy, n = CURVES[key[0]]
    try:
        seq = der_children(signature, 0, len(signature))
        ints = der_children(signature, seq[0].vstart, seq[0].end) if len(seq) == 1 else []
        if len(ints) != 2 or ints[0].tag != 0x02 or ints[1].tag != 0x02:
            return False
        r = der_uint(signature[ints[0].vstart:ints[0].end])
        s = der_uint(signature[ints[1].vstart:ints[1].end])
    except VerifyError:
        return False
    if not (0 < r < n and 0 < s < n):
        return False
    digest = hashlib.new(hash_name, message).digest()
    e = int.from_bytes(digest, "big") >> max(0, 8 * len(digest) - n.bit_length())
    w = pow(s, -1, n)
    point = _ec_add(p, _ec_mul(p, e * w % n, (gx, gy)), _ec_mul(p, r * w % n, key[1]))
    return point is not None and point[0] % n == r


def _signed_by(child: Cert, parent: Cert) -> bool:
    kind, hash_name = SIG_HASHES.get(child.sig_alg, ("", ""))
    if kind == "rsa" and parent.rsa_key is not None:
        return rsa_pkcs1v15_verify(parent.rsa_key, hash_name, child.tbs, child.signature)
    if kind == "ecdsa" and parent.ec_key is not None:
        return ecdsa_verify(parent.ec_key, hash_name, child.tbs, child.signature)
    return False


def _valid_at(cert: Cert, now: float) -> bool:
    return cert.not_before <= now <= cert.not_after


def load_trust_anchors(ca_bundle: str) -> List[Cert]:
    """CA certificates from the bundle, or from the system store when no bundle is configured."""
    paths = [ca_bundle] if ca_bundle else []
    if not paths:
        defaults = ssl.get_default_verify_paths()
        for candidate in (defaults.cafile, defaults.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt",
                          "/etc/pki/tls/certs/ca-bundle.crt"):
            if candidate and os.path.isfile(candidate):
                paths.append(candidate)
                break
        else:
            capath = defaults.capath or "/etc/ssl/certs"
            if os.path.isdir(capath):
                paths.extend(os.path.join(capath, f) for f in sorted(os.listdir(capath)))
    anchors = []
    seen = set()
    for path in paths:
        try:
            with open(path, "rb") as handle:
                text = handle.read().decode("ascii", "replace")
        except OSError:
            continue
        for block in re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S):
            try:
                der = base64.b64decode("".join(block.split()), validate=True)
                if der not in seen:
                    anchors.append(parse_cert(der))
                    seen.add(der)
            except (ValueError, VerifyError):
                continue  # a store may hold shapes this reader skips; they are simply not anchors
    return anchors


def verify_chain(chain: List[Cert], anchors: List[Cert], now: float) -> None:
    """x5c[i] must be signed by x5c[i+1]; the last must be, or be signed by, a trusted CA."""
    for index, cert in enumerate(chain):
        if not _valid_at(cert, now):
            raise VerifyError("jws_cert_expired", "x5c[%d] is outside its validity period" % index)
    for index in range(len(chain) - 1):
        child, parent = chain[index], chain[index + 1]
        if child.issuer != parent.subject:
            raise VerifyError("jws_untrusted_chain", "x5c[%d] was not issued by x5c[%d]" % (index, index + 1))
        if parent.is_ca is not True or (parent.key_usage is not None
                                        and not parent.key_usage & KU_KEY_CERT_SIGN):
            raise VerifyError("jws_untrusted_chain", "x5c[%d] is not a CA certificate" % (index + 1))
        if not _signed_by(child, parent):
            raise VerifyError("jws_untrusted_chain", "x5c[%d] signature does not verify" % index)
    last = chain[-1]
    if any(anchor.der == last.der for anchor in anchors):
        return
    for anchor in anchors:
        if anchor.subject == last.issuer and _valid_at(anchor, now) and _signed_by(last, anchor):
            return
    raise VerifyError("jws_untrusted_chain", "x5c does not chain to a trusted CA")


def cert_covers_host(cert: Cert, host: str) -> bool:
    """subjectAltName match for the vault host: exact DNS name, one-label wildcard, or IP."""
    host = host.strip("[]").lower()
    try:
        packed = ipaddress.ip_address(host).packed
        return packed in cert.ip_addresses
    except ValueError:
        pass
    for name in cert.dns_names:
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def verify_release_jws(jws: str, anchors: List[Cert], now: float, vault_host: str) -> Dict[str, Any]:
    """Verify the release JWS (signature by x5c[0], chain, signer name) and return its payload."""
    try:
        header, payload, parts = decode_compact(jws)
    except (ValueError, UnicodeDecodeError):
        raise VerifyError("jws_malformed", "release value is not a compact JWS") from None
    hash_name = JWS_HASHES.get(str(header.get("alg")))
    if hash_name is None:
        raise VerifyError("jws_malformed", "unsupported JWS alg")
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not 1 <= len(x5c) <= 6 or not all(isinstance(c, str) for c in x5c):
        raise VerifyError("jws_malformed", "JWS header has no usable x5c")
    try:
        chain = [parse_cert(base64.b64decode(c, validate=True)) for c in x5c]
    except ValueError:
        raise VerifyError("jws_malformed", "x5c entry is not base64 DER") from None
    leaf = chain[0]
    if leaf.rsa_key is None or leaf.rsa_key[0].bit_length() < 2048:
        raise VerifyError("jws_malformed", "x5c[0] must hold an RSA key of at least 2048 bits")
    thumb = header.get("x5t#S256")
    if thumb is not None and thumb != b64url(hashlib.sha256(leaf.der).digest()):
        raise VerifyError("jws_malformed", "x5t#S256 does not match x5c[0]")
    signing_input = (parts[0] + "." + parts[1]).encode("ascii")
    if not rsa_pkcs1v15_verify(leaf.rsa_key, hash_name, signing_input, b64url_decode(parts[2])):
        raise VerifyError("jws_bad_signature", "JWS signature does not verify with x5c[0]")
    if leaf.key_usage is not None and not leaf.key_usage & KU_DIGITAL_SIGNATURE:
        raise VerifyError("jws_untrusted_chain", "x5c[0] may not sign")
    verify_chain(chain, anchors, now)
    if not cert_covers_host(leaf, vault_host):
        raise VerifyError("jws_wrong_signer", "x5c[0] is not a certificate for the vault host")
    return payload


def _split_key_id(kid: str) -> Tuple[str, str, str]:
    """(origin, lower-case name, version) of a key URL; origin drops a default :443."""
    parts = urllib.parse.urlsplit(kid)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme.lower() != "https" or len(segments) not in (2, 3) or segments[0] != "keys":
        raise ValueError("not a key identifier")
    netloc = parts.netloc.lower()
    if netloc.endswith(":443"):
        netloc = netloc[:-4]
    return "https://" + netloc, segments[1].lower(), segments[2] if len(segments) == 3 else ""


def check_release_payload(payload: Dict[str, Any], p: Params) -> Dict[str, Any]:
    """The released key must be the one we asked for, wrapped to the vTPM key with our `enc`."""
    try:
        key = payload["response"]["key"]["key"]
        if not isinstance(key, dict):
            raise TypeError("key is not an object")
        kid = str(key["kid"])
        origin, name, version = _split_key_id(kid)
        want_origin, want_name, want_version = _split_key_id(requested_key_id(p))
    except (KeyError, TypeError, ValueError):
        raise VerifyError("jws_malformed", "payload has no response.key.key.kid") from None
    if origin != want_origin or name != want_name or not version or (
            want_version and version != want_version):
        raise VerifyError("kid_mismatch", "released key id does not match the requested key")
    request = payload.get("request")
    if isinstance(request, dict) and request.get("enc") not in (None, p.enc):
        raise VerifyError("enc_mismatch", "release was made with a different enc")
    try:
        key_hsm = json.loads(b64url_decode(str(key["key_hsm"])).decode("utf-8"))
        hsm_header = key_hsm["header"]
        ciphertext = key_hsm["ciphertext"]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError):
        raise VerifyError("jws_malformed", "payload has no usable key_hsm") from None
    if not isinstance(hsm_header, dict) or hsm_header.get("kid") != KEK_KID:
        raise VerifyError("kek_mismatch", "key_hsm is not wrapped to " + KEK_KID)
    if hsm_header.get("enc") not in (None, p.enc):
        raise VerifyError("enc_mismatch", "key_hsm was wrapped with a different enc")
    if not isinstance(ciphertext, str) or not ciphertext:
        raise VerifyError("jws_malformed", "key_hsm has no ciphertext")
    return key


def jwk_thumbprint(key: Dict[str, Any]) -> Optional[str]:
    """RFC 7638 SHA-256 thumbprint (base64url) of the released key's public part; None for oct."""
    kty = str(key.get("kty", "")).upper()
    try:
        if kty.startswith("RSA"):
            members = {"e": key["e"], "kty": "RSA", "n": key["n"]}
            members = {k: (b64url(b64url_decode(v).lstrip(b"\x00")) if k != "kty" else v)
                       for k, v in members.items()}
        elif kty.startswith("EC"):
            members = {"crv": key["crv"], "kty": "EC", "x": key["x"], "y": key["y"]}
        else:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return b64url(hashlib.sha256(canonical).digest())


# --------------------------------------------------------------------------------------------
# HTTP (urllib; no redirects, so a bearer token never follows a Location header)
# --------------------------------------------------------------------------------------------


class Response(NamedTuple):
    status: int
    headers: Dict[str, str]
    body: bytes


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def tls_context(ca_bundle: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_bundle or None)


def http_call(method: str, url: str, headers: Dict[str, str], body: Optional[bytes], *,
              context: ssl.SSLContext, use_proxy: bool) -> Response:
    """One request; HTTP errors are returned, transport errors raise SkrError(http_error)."""
    handlers: List[Any] = [urllib.request.HTTPSHandler(context=context), _NoRedirect()]
    if not use_proxy:
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with opener.open(request, timeout=HTTP_TIMEOUT) as resp:
            return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read(MAX_BODY))
    except urllib.error.HTTPError as err:
        data = err.read(MAX_BODY) if err.fp is not None else b""
        err.close()
        return Response(err.code, {k.lower(): v for k, v in (err.headers or {}).items()}, data)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise SkrError("http_error", "tls_verify_failed",
                           "TLS certificate of " + urllib.parse.urlsplit(url).netloc + " is not trusted"
                           ) from None
        raise SkrError("http_error", "connection_error",
                       "cannot reach " + urllib.parse.urlsplit(url).netloc + ": " + type(reason).__name__,
                       retry_in_window=True) from None


def _retry_after(headers: Mapping[str, str]) -> Optional[float]:
    value = headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


def log(text: str) -> None:
    """Diagnostics go to stderr; callers only ever pass fixed text, statuses and codes."""
    sys.stderr.write("skr_release: " + text + "\n")
    sys.stderr.flush()


def run_tool(argv: List[str], timeout: float, extra_env: Optional[Dict[str, str]] = None) -> Tuple[int, str, str]:
    """Run a VM tool with its output captured (never passed through) and tracing switched off."""
    env = dict(os.environ)
    env.pop("SKR_TRACE_ON", None)  # AzureAttestSKR tracing can print tokens
    env.update(extra_env or {})
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, env=env, check=False)
    except FileNotFoundError:
        raise SkrError("attestation_failed", "tool_not_found",
                       "command not found: " + sanitize(os.path.basename(argv[0]), 80)) from None
    except subprocess.TimeoutExpired:
        raise SkrError("attestation_failed", "tool_timeout",
                       "%s did not finish within %g s" % (sanitize(os.path.basename(argv[0]), 80),
                                                          timeout)) from None
    except OSError as err:
        raise SkrError("attestation_failed", "tool_failed",
                       "cannot run " + sanitize(os.path.basename(argv[0]), 80) + ": "
                       + type(err).__name__) from None
    return (proc.returncode, proc.stdout.decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace"))


def attest(p: Params) -> Tuple[str, float]:
    argv = [arg.replace("{maa}", p.maa_endpoint) for arg in p.attestation_command]
    code, out, _ = run_tool(argv, p.tool_timeout)
    if code != 0:
        raise SkrError("attestation_failed", "tool_exit_%d" % code,
                       "attestation command exited with %d" % code)
    token, exp = check_attestation_output(out, time.time())
    log("attestation token ok (%d chars, valid for %d s)" % (len(token), exp - time.time()))
    return token, exp


def imds_token(p: Params, context: ssl.SSLContext) -> Tuple[str, float]:
    """Managed-identity access token for the vault resource (IMDS, no proxy, bounded retries)."""
    query = {"api-version": IMDS_API_VERSION, "resource": p.imds_resource}
    if p.imds_client_id:
        query["client_id"] = p.imds_client_id
    url = p.imds_url + "/metadata/identity/oauth2/token?" + urllib.parse.urlencode(query)
    failure = SkrError("imds_failed", "unreachable", "IMDS did not answer", retryable=True)
    for attempt in range(len(IMDS_DELAYS) + 1):
        if attempt:
            time.sleep(IMDS_DELAYS[attempt - 1])
        try:
            resp = http_call("GET", url, {"Metadata": "true", "User-Agent": USER_AGENT}, None,
                             context=context, use_proxy=False)
        except SkrError as err:
            failure = SkrError("imds_failed", err.error_code, "IMDS: " + err.message, retryable=True)
            continue
        if resp.status == 200:
            try:
                data = json.loads(resp.body.decode("utf-8"))
                token = data["access_token"]
                expires_on = float(data.get("expires_on") or time.time() + float(data["expires_in"]))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise SkrError("imds_failed", "malformed_response", "IMDS token response is malformed",
                               http_status=200, retryable=True) from None
            if not isinstance(token, str) or not token:
                raise SkrError("imds_failed", "malformed_response", "IMDS returned no access token",
                               http_status=200, retryable=True)
            log("IMDS token ok (attempt %d)" % (attempt + 1))
            return token, expires_on
        code, message = _imds_error(resp)
        failure = SkrError("imds_failed", code, message, http_status=resp.status, retryable=True)
        if resp.status not in IMDS_RETRY_STATUSES and resp.status < 500:
            break
        if attempt < len(IMDS_DELAYS):
            log("IMDS HTTP %d, retrying" % resp.status)
    raise failure


def _imds_error(resp: Response) -> Tuple[str, str]:
    try:
        data = json.loads(resp.body.decode("utf-8"))
        return (error_code_of(str(data.get("error") or "HTTP%d" % resp.status)),
                sanitize(str(data.get("error_description") or ""), 200))
    except (ValueError, UnicodeDecodeError, AttributeError):
        return "HTTP%d" % resp.status, ""


def classify_release_error(status: int, body: str, retry_after: Optional[float] = None) -> SkrError:
    """Map a Key Vault release error response to an outcome (reference: skr_flow.md §9.3)."""
    code = inner = message = ""
    try:
        error = json.loads(body).get("error") or {}
        code = str(error.get("code") or "")
        message = str(error.get("message") or "")
        inner = str((error.get("innererror") or {}).get("code") or "")
    except (ValueError, AttributeError):
        message = body
    error_code = error_code_of(inner or code or "HTTP%d" % status)
    text = sanitize(message)
    lower = message.lower()
    if status == 403 and inner == "ForbiddenByRbac":
        return SkrError("forbidden_by_rbac", error_code, text, http_status=status, retry_in_window=True)
    if status == 404 or code == "KeyNotFound":
        return SkrError("key_not_found", error_code, text, http_status=status)
    if status in (400, 403, 409) and ("exportable" in lower or "not allowed to be exported" in lower):
        return SkrError("not_exportable", error_code, text, http_status=status)
    if status in (400, 403) and "cannot be verified" in lower:  # token rejected, not claims
        return SkrError("attestation_failed", error_code, text, http_status=status)
    if status == 403 and "policy" in lower:
        return SkrError("policy_denied", error_code, text, http_status=status)
    if status in (400, 403) and "attestation" in lower:
        return SkrError("attestation_failed", error_code, text, http_status=status)
    if status == 429 or status >= 500:
        return SkrError("http_error", error_code, text, http_status=status, retry_in_window=True,
                        retry_after=retry_after)
    return SkrError("http_error", error_code, text, http_status=status)


class Released(NamedTuple):
    key_id: str
    thumbprint: Optional[str]
    kty: str
    stored_path: Optional[str]
    stored_sha256: Optional[str]


def release_rest(p: Params, counter: List[int]) -> Released:
    """Mode rest: attest, IMDS token, POST release (retrying inside the window), verify, store."""
    context = tls_context(p.ca_bundle)
    maa_token = ""
    maa_exp = 0.0
    access_token = ""
    access_exp = 0.0
    url = requested_key_id(p) + "/release?" + urllib.parse.urlencode({"api-version": p.api_version})

    def attempt() -> bytes:
        nonlocal maa_token, maa_exp, access_token, access_exp
        if maa_exp - time.time() < TOKEN_MIN_REMAINING:
            maa_token, maa_exp = attest(p)
        if access_exp - time.time() < TOKEN_MIN_REMAINING:
            access_token, access_exp = imds_token(p, context)
        counter[0] += 1
        body = json.dumps({"target": maa_token, "enc": p.enc}).encode("utf-8")
        resp = http_call("POST", url, {"Authorization": "Bearer " + access_token,
                                       "Content-Type": "application/json", "Accept": "application/json",
                                       "User-Agent": USER_AGENT}, body, context=context, use_proxy=True)
        log("release attempt %d: HTTP %d" % (counter[0], resp.status))
        if resp.status != 200:
            raise classify_release_error(resp.status, resp.body.decode("utf-8", "replace"),
                                         _retry_after(resp.headers))
        return resp.body

    body = retry_in_window(p, attempt)
    try:
        jws = json.loads(body.decode("utf-8"))["value"]
        if not isinstance(jws, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise SkrError("jws_invalid", "jws_malformed", "release response has no value",
                       http_status=200) from None
    try:
        payload = verify_release_jws(jws, load_trust_anchors(p.ca_bundle), time.time(),
                                     urllib.parse.urlsplit(p.vault_url).hostname or "")
        key = check_release_payload(payload, p)
    except VerifyError as err:
        raise SkrError("jws_invalid", err.code, err.why, http_status=200) from None
    log("release JWS verified")
    path, digest = store_jws(p.output_path, jws)
    return Released(str(key["kid"]), jwk_thumbprint(key), str(key.get("kty", "")), path, digest)


def release_azureattestskr(p: Params, counter: List[int]) -> Released:
    """Mode azureattestskr: the installed tool attests, releases and unwraps in one process."""
    key_url = requested_key_id(p)
    argv = [*p.azureattestskr_command, "-a", p.maa_endpoint, "-k", key_url, "-c", "imds", "-r"]
    tool_env = {"IMDS_CLIENT_ID": p.imds_client_id} if p.imds_client_id else {}  # the tool's selector

    def attempt() -> None:
        counter[0] += 1
        code, out, err = run_tool(argv, p.tool_timeout, tool_env)
        log("AzureAttestSKR run %d: exit %d" % (counter[0], code))
        if code == 0:
            return
        raise classify_tool_exit(code, out + "\n" + err)

    retry_in_window(p, attempt)
    return Released(key_url, None, "", None, None)


def classify_tool_exit(code: int, output: str) -> SkrError:
    """AzureAttestSKR exit codes: 2 MAA, 3 IMDS/Entra, 4 Key Vault HTTP error, 5 crypto, 6 transport."""
    if code == 2:
        return SkrError("attestation_failed", "maa_failed", "AzureAttestSKR: attestation failed")
    if code == 3:
        return SkrError("imds_failed", "token_failed", "AzureAttestSKR: IMDS/Entra token failed",
                        retryable=True)
    if code == 4:
        match = re.search(r"SKR HTTP request failed: HTTP (\d{3}): ?(.*)", output, re.S)
        if match:
            return classify_release_error(int(match.group(1)), match.group(2).strip())
        return SkrError("http_error", "unparsed_http_error", "AzureAttestSKR: Key Vault HTTP error")
    if code == 6:
        return SkrError("http_error", "transport_error", "AzureAttestSKR: transport error",
                        retry_in_window=True)
    if code == 5:
        return SkrError("internal_error", "crypto_error", "AzureAttestSKR: crypto failure")
    return SkrError("internal_error", "tool_exit_%d" % code, "AzureAttestSKR exited with %d" % code)


def retry_in_window(p: Params, attempt: Callable[[], Any]) -> Any:
    """Run attempt(); retry failures marked retry_in_window with backoff until the window ends.

    The window starts at the first attempt. Waits are 2, 4, 8, then 10 s (or Retry-After), cut
    short so the last attempt happens at the end of the window.
    """
    deadline = time.monotonic() + p.retry_window
    delay = RETRY_FIRST_DELAY
    while True:
        try:
            return attempt()
        except SkrError as failure:
            remaining = deadline - time.monotonic()
            if not failure.retry_in_window or remaining <= 0:
                raise
            wait = min(failure.retry_after if failure.retry_after is not None else delay, remaining)
            log("%s (%s); retrying in %.1f s" % (failure.outcome, failure.error_code, wait))
            time.sleep(wait)
            delay = min(delay * 2, RETRY_MAX_DELAY)


# --------------------------------------------------------------------------------------------
# Storage: directory 0700, file 0600, written atomically
# --------------------------------------------------------------------------------------------


def prepare_output_dir(path: str) -> None:
    """Create the key directory 0700 (or check an existing one is private) before releasing."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.stat(directory)
    except OSError as err:
        raise SkrError("invalid_parameters", "output_dir_unusable",
                       "SKR_OUTPUT_PATH: cannot create its directory (%s)" % type(err).__name__) from None
    if info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise SkrError("invalid_parameters", "output_dir_not_private",
                       "SKR_OUTPUT_PATH: directory must be owned by this user with mode 0700")


def store_jws(path: str, jws: str) -> Tuple[str, str]:
    directory = os.path.dirname(path)
    temp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    data = jws.encode("ascii")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise SkrError("internal_error", "store_failed",
                       "cannot store the released key (%s)" % type(err).__name__) from None
    log("released key stored root-only")
    return path, hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------
# Result line and main
# --------------------------------------------------------------------------------------------

RETRYABLE_OUTCOMES = ("forbidden_by_rbac", "imds_failed")


def result_line(fields: Dict[str, Any]) -> str:
    """SKR-RESULT + compact ASCII JSON, shortened (message first) to fit MAX_RESULT_BYTES."""
    line = RESULT_PREFIX + json.dumps(fields, separators=(",", ":"))
    while len(line) > MAX_RESULT_BYTES and fields.get("message"):
        message = str(fields["message"])
        fields["message"] = message[: max(0, len(message) - (len(line) - MAX_RESULT_BYTES) - 3)] + "..."
        if len(fields["message"]) <= 3:
            fields["message"] = None
        line = RESULT_PREFIX + json.dumps(fields, separators=(",", ":"))
    return line


def main(env: Mapping[str, str]) -> int:
    started = time.monotonic()
    counter = [0]
    fields: Dict[str, Any] = {
        "schema": 1, "outcome": "internal_error", "exit_code": EXIT_TERMINAL, "retryable": False,
        "mode": None, "key_id": None, "key_thumbprint": None, "kty": None, "enc": None,
        "http_status": None, "error_code": None, "message": None, "attempts": 0,
        "elapsed_seconds": 0.0, "stored_path": None, "stored_sha256": None,
        "script_version": SCRIPT_VERSION,
    }
    try:
        try:
            p = load_params(env)
        except ParamError as err:
            raise SkrError("invalid_parameters", err.code, err.text) from None
        fields.update(mode=p.mode, key_id=requested_key_id(p), enc=p.enc)
        if p.mode == "rest":
            prepare_output_dir(p.output_path)
            released = release_rest(p, counter)
        else:
            released = release_azureattestskr(p, counter)
        fields.update(outcome="released", exit_code=EXIT_RELEASED, key_id=released.key_id,
                      key_thumbprint=released.thumbprint, kty=released.kty or None, http_status=200,
                      stored_path=released.stored_path, stored_sha256=released.stored_sha256)
    except SkrError as failure:
        retryable = failure.retryable or failure.outcome in RETRYABLE_OUTCOMES
        fields.update(outcome=failure.outcome, error_code=failure.error_code,
                      message=sanitize(failure.message) or None, http_status=failure.http_status,
                      retryable=retryable, exit_code=EXIT_RETRYABLE if retryable else EXIT_TERMINAL)
    except Exception as exc:  # never let a traceback (which may quote data) reach the output
        fields.update(outcome="internal_error", error_code="unexpected_" + type(exc).__name__,
                      message="unexpected error in the release script")
    fields["attempts"] = counter[0]
    fields["elapsed_seconds"] = round(time.monotonic() - started, 3)
    sys.stdout.write(result_line(fields) + "\n")
    sys.stdout.flush()
    return int(fields["exit_code"])


if __name__ == "__main__":
    sys.exit(main(os.environ))
