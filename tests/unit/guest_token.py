"""A decoded MAA guest attestation token with the real claim layout (reference/skr_flow.md §2)."""

from __future__ import annotations

import copy
from typing import Any

AUTHORITY = "https://sharedweu.weu.attest.azure.net"

_GUEST_CLAIMS: dict[str, Any] = {
    "iss": AUTHORITY,
    "iat": 1700000000,
    "nbf": 1700000000,
    "exp": 1700028800,
    "jti": "0f4b1c3e9a",
    "secureboot": True,
    "x-ms-ver": "1.0",
    "x-ms-policy-hash": "wm9mHlvTU82e8UqoOy1Yj1FBRSNkfe99-69IYDq9eWs",
    "x-ms-attestation-type": "azurevm",
    "x-ms-azurevm-attestation-protocol-ver": "2.0",
    "x-ms-azurevm-ostype": "Linux",
    "x-ms-azurevm-osdistro": "Ubuntu",
    "x-ms-azurevm-osversion-major": 20,
    "x-ms-azurevm-osversion-minor": 4,
    "x-ms-azurevm-is-windows": False,
    "x-ms-azurevm-debuggersdisabled": True,
    "x-ms-azurevm-vmid": "6c8e1a3c-2d6b-4a57-9a41-3c8d8f3f1a2b",
    "x-ms-azurevm-pcrs": [0, 1, 2, 3, 4, 5, 6, 7],
    "x-ms-isolation-tee": {
        "x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "azure-compliant-cvm",
        "x-ms-runtime": {
            "keys": [{"kid": "HCLAkPub", "kty": "RSA", "key_ops": ["sign"], "e": "AQAB", "n": "q1w2"}],
            "vm-configuration": {
                "console-enabled": True,
                "current-time": 1700000000,
                "secure-boot": True,
                "tpm-enabled": True,
                "vmUniqueId": "6C8E1A3C-2D6B-4A57-9A41-3C8D8F3F1A2B",
            },
        },
        "x-ms-sevsnpvm-authorkeydigest": "0" * 96,
        "x-ms-sevsnpvm-bootloader-svn": 3,
        "x-ms-sevsnpvm-familyId": "01000000000000000000000000000000",
        "x-ms-sevsnpvm-guestsvn": 2,
        "x-ms-sevsnpvm-hostdata": "0" * 64,
        "x-ms-sevsnpvm-idkeydigest": "57486a44" + "0" * 88,
        "x-ms-sevsnpvm-imageId": "02000000000000000000000000000000",
        "x-ms-sevsnpvm-is-debuggable": False,
        "x-ms-sevsnpvm-launchmeasurement": "ad6de16a" + "0" * 88,
        "x-ms-sevsnpvm-microcode-svn": 115,
        "x-ms-sevsnpvm-migration-allowed": False,
        "x-ms-sevsnpvm-reportdata": "0" * 128,
        "x-ms-sevsnpvm-reportid": "0" * 64,
        "x-ms-sevsnpvm-smt-allowed": True,
        "x-ms-sevsnpvm-snpfw-svn": 8,
        "x-ms-sevsnpvm-tee-svn": 0,
        "x-ms-sevsnpvm-vmpl": 0,
    },
    "x-ms-runtime": {
        "client-payload": {"nonce": "ADE0101"},
        "keys": [{"kid": "TpmEphemeralEncryptionKey", "kty": "RSA", "key_ops": ["encrypt"], "e": "AQAB", "n": "z9x8"}],
    },
}


def guest_claims(tee: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fresh copy; ``tee`` entries replace (or, with None, remove) x-ms-isolation-tee claims."""
    claims = copy.deepcopy(_GUEST_CLAIMS)
    nested = claims["x-ms-isolation-tee"]
    for key, value in (tee or {}).items():
        if value is None:
            nested.pop(key, None)
        else:
            nested[key] = value
    return claims
