"""E2E helpers: a ledger of every secret the twin issues, and scans for them."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import localdev.twin.release as twin_release
from localdev.stack import Stack
from localdev.twin.core import Twin
from localdev.twin.maa import signer_for
from localdev.twin.runcommands import run_command_log


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass
class Issued:
    kind: str  # access_token | maa_token | release_jws
    value: str
    at: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ledger:
    """Wraps the twin's token, MAA and release signers to record what they hand out (and when)."""

    twin: Twin
    issued: list[Issued] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _add(self, kind: str, value: str, **extra: Any) -> None:
        with self.lock:
            self.issued.append(Issued(kind, value, self.twin.clock.time(), extra))

    @contextmanager
    def recording(self) -> Iterator[Ledger]:
        identity = self.twin.identity
        signer = signer_for(self.twin)
        original_mint = identity.mint_token
        original_sign = signer.sign
        original_release = twin_release.sign_release

        def mint(principal_id: str, audience: str) -> str:
            token = original_mint(principal_id, audience)
            self._add("access_token", token, principal=principal_id)
            return token

        def sign(claims: dict[str, Any]) -> str:
            token = original_sign(claims)
            self._add("maa_token", token)
            return token

        def release(twin: Twin, payload: dict[str, Any], *, vm: str | None = None) -> str:
            jws = original_release(twin, payload, vm=vm)
            if twin is self.twin:
                key = payload["response"]["key"]["key"]
                self._add("release_jws", jws, kid=key.get("kid"), key_hsm=key.get("key_hsm"))
            return jws

        identity.mint_token = mint  # type: ignore[method-assign]
        signer.sign = sign  # type: ignore[method-assign]
        twin_release.sign_release = release
        try:
            yield self
        finally:
            twin_release.sign_release = original_release
            del identity.mint_token
            del signer.sign

    def releases(self) -> list[Issued]:
        with self.lock:
            return [i for i in self.issued if i.kind == "release_jws"]

    def needles(self) -> dict[str, str]:
        """Every secret by a readable label: token payloads and signatures, key_hsm, private key numbers.

        JWT/JWS headers are left out: they are public (algorithm, key id, certificate chain).
        """
        out: dict[str, str] = {}
        with self.lock:
            issued = list(self.issued)
        for n, item in enumerate(issued):
            parts = item.value.split(".")
            if len(parts) == 3:
                out[f"{item.kind}#{n} payload"] = parts[1]
                out[f"{item.kind}#{n} signature"] = parts[2]
            else:
                out[f"{item.kind}#{n}"] = item.value
            if item.kind == "release_jws" and item.extra.get("key_hsm"):
                out[f"key_hsm#{n}"] = str(item.extra["key_hsm"])
        for vault in self.twin.vaults.values():
            for stored in vault.keys.values():
                for version in stored.versions:
                    label = f"key {stored.name}/{version.version}"
                    for name, raw in private_parts(version.private_key).items():
                        out[f"{label} {name} b64url"] = _b64url(raw)
                        out[f"{label} {name} b64"] = base64.b64encode(raw).decode()
                        out[f"{label} {name} hex"] = raw.hex()
        return out


def private_parts(key: Any) -> dict[str, bytes]:
    """The secret numbers of an RSA or EC private key, big-endian."""
    numbers = key.private_numbers()
    values = {"d": numbers.d, "p": numbers.p, "q": numbers.q} if hasattr(numbers, "p") else {"d": numbers.private_value}
    return {name: value.to_bytes((value.bit_length() + 7) // 8, "big") for name, value in values.items()}


def sqlite_text(db_path: Path) -> str:
    """Every row of every table of the host's store, as text (plus the raw file bytes)."""
    chunks: list[str] = []
    for path in sorted(db_path.parent.glob(db_path.name + "*")):
        chunks.append(path.read_bytes().decode("latin-1"))
    connection = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                chunks.append(json.dumps([str(v) for v in row]))
    finally:
        connection.close()
    return "\n".join(chunks)


def places(stack: Stack) -> dict[str, str]:
    """Every place a secret must never reach, as searchable text."""
    statuses = stack.host.instances()
    found = {
        "custom status": json.dumps([s.custom_status for s in statuses]),
        "outputs": json.dumps([s.output for s in statuses], default=str),
        "histories": json.dumps([[repr(e) for e in stack.host.history(s.instance_id)] for s in statuses], default=str),
        "host logs": stack.host.log_text(),
        "run-command views": json.dumps(run_command_log(stack.twin), default=str),
        "published events": json.dumps(stack.twin.events.published, default=str),
    }
    if stack.db_path is not None:
        found["sqlite store"] = sqlite_text(stack.db_path)
    return found


CHUNK = 32
_RUN = re.compile(rf"[A-Za-z0-9_\-+/]{{{CHUNK},}}")


def leaks(needles: dict[str, str], haystacks: dict[str, str]) -> list[str]:
    """Where any piece of a secret shows up: every aligned 32-character chunk of every secret is
    looked for at every offset of every base64/hex-looking run, so a leaked fragment of 63+
    characters (a log line with part of a token, a truncated JWS) is found."""
    chunks: dict[str, str] = {}
    for label, secret in needles.items():
        for start in range(0, len(secret) - CHUNK + 1, CHUNK):
            chunks.setdefault(secret[start : start + CHUNK], label)
    found: set[str] = set()
    for where, text in haystacks.items():
        for run in _RUN.findall(text):
            for offset in range(len(run) - CHUNK + 1):
                label = chunks.get(run[offset : offset + CHUNK])
                if label is not None:
                    found.add(f"{label} in {where}")
    return sorted(found)
