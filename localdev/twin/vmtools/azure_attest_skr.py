"""Stand-in for ``AzureAttestSKR`` (cvm-securekey-release-app), release mode only.

Flags ``-a`` attestation URL, ``-n`` nonce, ``-k`` full key URL, ``-c imds|sp``, ``-r`` release.
Exit codes as the real tool: 0 ok, 1 usage, 2 MAA failure, 3 IMDS/AAD failure, 4 Key Vault HTTP
error (``SKR HTTP request failed: HTTP <code>: <body>`` on stderr), 5 crypto/unsupported key, 6
transport. On success it prints only a key-type message to stderr. Deviation: the simulated tool
does not unwrap ``key_hsm`` with the vTPM (that needs AES, absent from the standard library); it
checks that the release carries a ``key_hsm`` wrapped to ``TpmEphemeralEncryptionKey`` instead.
"""

from __future__ import annotations

import base64
import json
import sys

from vmcommon import ToolError, _tls_context, attest, http_request, imds_token, load_config

DEFAULT_MAA = "https://sharedweu.weu.attest.azure.net/"
DEFAULT_NONCE = "ADE0101"
USAGE = ("Usage: AzureAttestSKR -a <attestation url> -k <key url> [-n <nonce>] [-c imds|sp] -r\n"
         "  (-w/-u/-B are not provided by the twin's simulated tool)")


def parse(argv: list) -> dict:
    options = {"-a": DEFAULT_MAA, "-n": DEFAULT_NONCE, "-k": "", "-c": "imds", "-r": False}
    index = 0
    while index < len(argv):
        flag = argv[index]
        if flag == "-r":
            options["-r"] = True
            index += 1
            continue
        if flag not in ("-a", "-n", "-k", "-c") or index + 1 >= len(argv):
            raise ValueError(f"unknown or incomplete option {flag!r}")
        options[flag] = argv[index + 1]
        index += 2
    if not options["-r"]:
        raise ValueError("an operation is required (-r)")
    if not options["-k"]:
        raise ValueError("a key URL is required (-k)")
    if options["-c"] not in ("imds", "sp"):
        raise ValueError("credential source must be imds or sp")
    return options


def key_resource(key_url: str) -> str:
    return "https://managedhsm.azure.net" if "managedhsm" in key_url.lower() else "https://vault.azure.net"


def released_key_type(jws: str) -> str:
    parts = jws.split(".")
    if len(parts) != 3:
        raise ValueError("release response is not a compact JWS")
    payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    key = payload["response"]["key"]["key"]
    blob = json.loads(base64.urlsafe_b64decode(key["key_hsm"] + "=" * (-len(key["key_hsm"]) % 4)))
    if blob["header"]["kid"] != "TpmEphemeralEncryptionKey":
        raise ValueError("released key is not wrapped to the vTPM ephemeral key")
    return str(key["kty"])


def release(options: dict) -> int:
    try:
        config = load_config()
        token = attest(config, options["-a"], options["-n"])
    except ToolError as exc:
        print(f"Attestation failed: {exc}", file=sys.stderr)
        return 2
    if options["-c"] == "sp":
        print("Failed to get an access token: service-principal credentials are not available in the twin",
              file=sys.stderr)
        return 3
    try:
        access_token = imds_token(key_resource(options["-k"]))
    except ToolError as exc:
        print(f"Failed to get an access token from IMDS: {exc}", file=sys.stderr)
        return 3
    url = options["-k"].rstrip("/") + "/release?api-version=7.3"
    body = json.dumps({"target": token, "nonce": options["-n"], "enc": "RSA_AES_KEY_WRAP_256"}).encode()
    try:
        status, text, _ = http_request(url, method="POST", body=body, context=_tls_context(config), headers={
            "Authorization": "Bearer " + access_token, "Content-Type": "application/json",
            "Accept": "application/json", "User-Agent": "AzureDiskEncryption"})
    except ToolError as exc:
        print(f"SKR request failed: {exc}", file=sys.stderr)
        return 6
    if status != 200:
        print(f"SKR HTTP request failed: HTTP {status}: {text}", file=sys.stderr)
        return 4
    try:
        kty = released_key_type(json.loads(text)["value"])
    except (ValueError, KeyError, TypeError) as exc:
        print(f"Failed to process the released key: {exc}", file=sys.stderr)
        return 5
    if kty.startswith("RSA"):
        print("Released key type: RSA", file=sys.stderr)
        return 0
    if kty.startswith("EC"):
        print("Released key type: EC", file=sys.stderr)
        return 0
    print(f"Released key type {kty} is not supported", file=sys.stderr)
    return 5


def main(argv: list) -> int:
    try:
        options = parse(argv)
    except ValueError as exc:
        print(f"{exc}\n{USAGE}", file=sys.stderr)
        return 1
    return release(options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
