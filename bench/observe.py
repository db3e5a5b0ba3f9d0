"""Read-only taps on a running twin for the benchmarks: when each VM identity's release call was
first let through by RBAC, and how many ARM requests each token bucket admitted or refused.

The taps wrap the twin's own ``rbac.check`` and ``throttle.take`` on that one twin object and
return exactly what they return, so the twin behaves as without them.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from localdev.twin.core import Twin

RELEASE_ACTION = "Microsoft.KeyVault/vaults/keys/release/action"


@dataclass
class TwinObserver:
    twin: Twin
    first_release_allowed: dict[str, float] = field(default_factory=dict)  # principal id -> twin-clock time
    release_checks: Counter[str] = field(default_factory=Counter)  # principal id -> release RBAC checks
    admitted: Counter[tuple[str, str]] = field(default_factory=Counter)  # (principal, bucket) -> requests let in
    throttled: Counter[tuple[str, str]] = field(default_factory=Counter)  # (principal, bucket) -> 429s
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self) -> TwinObserver:
        rbac, throttle = self.twin.rbac, self.twin.throttle
        check, take = rbac.check, throttle.take

        @functools.wraps(check)
        def observed_check(principal_id: str, action: str, scope: str, *, data_action: bool) -> Any:
            decision = check(principal_id, action, scope, data_action=data_action)
            if data_action and action.lower() == RELEASE_ACTION.lower():
                key = principal_id.lower()
                with self._lock:
                    self.release_checks[key] += 1
                    if decision.allowed and key not in self.first_release_allowed:
                        self.first_release_allowed[key] = self.twin.clock.time()
            return decision

        @functools.wraps(take)
        def observed_take(principal_id: str, kind: str) -> Any:
            outcome = take(principal_id, kind)
            with self._lock:
                (self.admitted if outcome.allowed else self.throttled)[(principal_id.lower(), kind)] += 1
            return outcome

        rbac.check = observed_check  # type: ignore[method-assign]
        throttle.take = observed_take  # type: ignore[method-assign]
        return self

    def for_principal(self, counter: Counter[tuple[str, str]], principal_id: str) -> dict[str, int]:
        with self._lock:
            return {kind: n for (who, kind), n in counter.items() if who == principal_id.lower()}
