"""Fault injection: a registry of faults, matched per request (middleware) or per named check.

A fault has a ``kind``, optional ``match`` constraints (service, path regex, method, vault, vm,
principal_id, ...), a ``rate`` (probability, seeded), an optional ``count`` (remaining triggers) and
an optional end time on the twin clock. ``Faults.active(kind, **attrs)`` is how services ask
"does a fault of this kind apply to me now?" — it consumes one trigger when it answers yes.
"""

from __future__ import annotations

import itertools
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localdev.twin.core import Twin

# Faults the twin's own middleware applies to whole requests.
REQUEST_KINDS = ("error", "latency", "throttle_storm", "kv_outage", "maa_outage")
# Faults a service consults at a specific point (named flags).
NAMED_KINDS = (
    "principal_not_found",  # authorization: role-assignment PUT answers 400 PrincipalNotFound
    "runcommand_conflict",  # run commands: 409 Conflict, another operation is in progress
    "runcommand_hang",  # run commands: never finishes on its own
    "runcommand_timeout",  # run commands: ends TimedOut
    "vm_delete_during_run",  # run commands: the VM is deleted while the command runs
    "imds_error",  # IMDS token endpoint: params status (404, 410, 429, 5xx), retry_after
    "release_bad_signature",  # Key Vault release: the JWS signature does not verify
    "release_untrusted_chain",  # Key Vault release: the x5c chain is rooted at a CA nobody trusts
)
KINDS = REQUEST_KINDS + NAMED_KINDS
PARAM_KEYS = frozenset({"status", "seconds", "retry_after", "code", "message", "exit_code"})


@dataclass
class Fault:
    id: str
    kind: str
    match: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    rate: float = 1.0
    count: int | None = None  # remaining triggers; None = unlimited
    until: float | None = None  # twin-clock end; None = until removed
    hits: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "match": self.match, "params": self.params, "rate": self.rate,
                "count": self.count, "until": self.until, "hits": self.hits}


def _value_matches(key: str, wanted: str, actual: Any) -> bool:
    if actual is None:
        return False
    text = str(actual)
    if key == "path":
        return re.search(wanted, text, re.IGNORECASE) is not None
    if key == "vm":
        lowered, target = text.lower().rstrip("/"), wanted.lower().rstrip("/")
        return lowered == target or lowered.endswith(f"/virtualmachines/{target}")
    return text.lower() == wanted.lower()


class Faults:
    def __init__(self, twin: Twin) -> None:
        self._twin = twin
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._faults: list[Fault] = []

    def add(self, kind: str, *, rate: float = 1.0, count: int | None = None, duration: float | None = None,
            **settings: Any) -> Fault:
        """Register a fault. Keyword settings in PARAM_KEYS are parameters, the rest match constraints."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known kinds: {', '.join(KINDS)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {rate}")
        if count is not None and count < 1:
            raise ValueError(f"fault count must be >= 1 when given, got {count}")
        if duration is not None and duration <= 0:
            raise ValueError(f"fault duration must be positive when given, got {duration}")
        params = {k: v for k, v in settings.items() if k in PARAM_KEYS}
        match = {k: str(v) for k, v in settings.items() if k not in PARAM_KEYS and v is not None}
        status = params.get("status")
        if kind == "error" and status is not None and not 500 <= int(status) <= 599:
            raise ValueError(f"an 'error' fault needs a 5xx status, got {status}")
        if kind == "latency" and float(params.get("seconds", 0)) <= 0:
            raise ValueError("a 'latency' fault needs seconds > 0")
        if "path" in match:
            re.compile(match["path"])
        until = None if duration is None else self._twin.clock.time() + duration
        fault = Fault(id=f"f{next(self._ids)}", kind=kind, match=match, params=params, rate=rate, count=count,
                      until=until)
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault_id: str) -> bool:
        with self._lock:
            before = len(self._faults)
            self._faults = [f for f in self._faults if f.id != fault_id]
            return len(self._faults) != before

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        now = self._twin.clock.time()
        with self._lock:
            return [f for f in self._faults if f.until is None or f.until > now]

    def active(self, kind: str, **attrs: Any) -> Fault | None:
        """The first live fault of ``kind`` whose constraints all match ``attrs`` (consumes a trigger)."""
        now = self._twin.clock.time()
        with self._lock:
            for fault in self._faults:
                if fault.kind != kind or (fault.until is not None and fault.until <= now):
                    continue
                if not all(_value_matches(k, v, attrs.get(k)) for k, v in fault.match.items()):
                    continue
                if fault.rate < 1.0 and self._twin.rng.random() >= fault.rate:
                    continue
                fault.hits += 1
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                return fault
        return None
