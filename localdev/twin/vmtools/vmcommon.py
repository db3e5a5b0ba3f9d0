"""Shared plumbing of the twin's in-VM tools (standard library only, Python 3.8+).

A simulated VM proves itself to the twin's MAA with a per-VM secret written by the sandbox into
the file named by ``SKR_TWIN_VM_CONFIG`` (the stand-in for the vTPM's attestation key), never
passed through the script's environment or argument list.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

CONFIG_ENV = "SKR_TWIN_VM_CONFIG"
MAA_API_VERSION = "2020-10-01"
IMDS_API_VERSION = "2018-02-01"
RETRYABLE_MAA = (408, 429, 500, 502, 503, 504)


class ToolError(Exception):
    """A failed step; ``status``/``body`` are set for HTTP errors, None for transport errors."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def load_config() -> dict:
    path = os.environ.get(CONFIG_ENV, "")
    if not path:
        raise ToolError("no vTPM found: this machine is not a simulated VM (SKR_TWIN_VM_CONFIG is unset)")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise ToolError(f"cannot read the simulated vTPM state: {exc}") from exc


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def evidence_mac(secret: str, vm_id: str, client_payload: str) -> str:
    """The simulated quote: binds the VM id and the nonce payload to the VM's secret."""
    message = f"{vm_id.lower()}|{client_payload}".encode()
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _tls_context(config: dict) -> ssl.SSLContext:
    cafile = os.environ.get("SKR_CA_BUNDLE") or config.get("ca_bundle") or None
    return ssl.create_default_context(cafile=cafile)


def http_request(url: str, *, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
                 context: ssl.SSLContext | None = None, timeout: float = 30.0) -> tuple[int, str, dict]:
    """One request without proxies; returns (status, text, headers) for any HTTP status."""
    handlers: list = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace"), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace"), dict(exc.headers or {})
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        endpoint = url.split("?", maxsplit=1)[0]
        raise ToolError(f"transport error calling {endpoint}: {reason}") from exc


def attest(config: dict, maa_url: str, nonce: str | None) -> str:
    """Guest attestation against the MAA host of ``maa_url``; returns the JWT."""
    parts = urllib.parse.urlsplit(maa_url if "//" in maa_url else "https://" + maa_url)
    if not parts.netloc:
        raise ToolError(f"invalid attestation URL {maa_url!r}")
    url = f"https://{parts.netloc}/attest/AzureGuest?api-version={MAA_API_VERSION}"
    client_payload = json.dumps({"nonce": nonce} if nonce else {}, separators=(",", ":"))
    info = {
        "AttestationProtocolVersion": "2.0",
        "OSType": config.get("os_type", "Linux"),
        "OSDistro": config.get("os_distro", "Ubuntu"),
        "OSVersionMajor": 20,
        "OSVersionMinor": 4,
        "OSBuild": "NotApplication",
        "ClientPayload": client_payload,
        "TpmInfo": {"VmId": config["vm_id"],
                    "PcrQuote": evidence_mac(config["secret"], config["vm_id"], client_payload)},
        "IsolationInfo": {"Type": "SevSnp"},
    }
    body = json.dumps({"AttestationInfo": b64url(json.dumps(info).encode("utf-8"))}).encode("utf-8")
    context = _tls_context(config)
    status, text = 0, ""
    for attempt in range(4):
        status, text, headers = http_request(
            url, method="POST", body=body, context=context,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if status not in RETRYABLE_MAA or attempt == 3:
            break
        time.sleep(_retry_after(headers, 2.0 * (2 ** attempt)))
    token = response_field(status, text, "token", "attestation")
    if token.count(".") != 2:
        raise ToolError("attestation failed: MAA returned no JWT")
    return token


def response_field(status: int, text: str, name: str, step: str) -> str:
    """The string ``name`` of a 200 JSON answer, else a ToolError naming the ``step``."""
    if status != 200:
        raise ToolError(f"{step} failed: HTTP {status}: {text.strip()[:400]}", status, text)
    try:
        value = json.loads(text)[name]
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolError(f"{step} failed: the response has no {name}") from exc
    if not isinstance(value, str):
        raise ToolError(f"{step} failed: {name} is not a string")
    return value


def _retry_after(headers: dict, default: float) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return default
    return default


def imds_token(resource: str) -> str:
    """Managed-identity token from the VM's IMDS (``SKR_IMDS_URL``), no retries (like the tool)."""
    base = os.environ.get("SKR_IMDS_URL", "http://169.254.169.254").rstrip("/")
    query = urllib.parse.urlencode({"api-version": IMDS_API_VERSION, "resource": resource})
    for name in ("client_id", "object_id", "msi_res_id"):
        value = os.environ.get("IMDS_" + name.upper())
        if value:
            query += "&" + urllib.parse.urlencode({name: value})
    status, text, _ = http_request(base + "/metadata/identity/oauth2/token?" + query, headers={"Metadata": "true"})
    return response_field(status, text, "access_token", "IMDS token request")
