"""Stand-in for the guest-attestation sample ``AttestationClient`` (flags ``-a``, ``-n``, ``-o``).

Like the real one it prints the JWT (``-o token``) or ``true``/``false`` (``-o bool``) on stdout,
and on a failed attestation prints the error description on stdout and still exits 0.
"""

from __future__ import annotations

import json
import sys

from vmcommon import ToolError, attest, load_config

DEFAULT_MAA = "https://sharedeus2.eus2.attest.azure.net/"
USAGE = "Usage: AttestationClient [-a <attestation url>] [-n <nonce>] [-o token|bool]"


def parse(argv: list) -> dict:
    options = {"-a": DEFAULT_MAA, "-n": None, "-o": "bool"}
    index = 0
    while index < len(argv):
        flag = argv[index]
        if flag in ("-h", "--help"):
            raise SystemExit(USAGE)
        if flag not in options or index + 1 >= len(argv):
            raise ValueError(f"unknown or incomplete option {flag!r}")
        options[flag] = argv[index + 1]
        index += 2
    if options["-o"] not in ("token", "bool"):
        raise ValueError("output type must be token or bool")
    return options


def compliant(token: str) -> bool:
    import base64

    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tee = claims.get("x-ms-isolation-tee") or {}
    return (tee.get("x-ms-attestation-type") == "sevsnpvm"
            and tee.get("x-ms-compliance-status") == "azure-compliant-cvm")


def main(argv: list) -> int:
    try:
        options = parse(argv)
    except ValueError as exc:
        print(f"{exc}\n{USAGE}")
        return 1
    try:
        token = attest(load_config(), options["-a"], options["-n"])
    except ToolError as exc:
        print(f"Failed to attest the guest: {exc}")
        return 0
    print(token if options["-o"] == "token" else ("true" if compliant(token) else "false"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
