"""The demo's verdict: per-VM outcome against the expected one, counts, propagation statistics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from localdev.demo_fleet import VmSpec
from localdev.demo_stats import distribution


def outcome_label(result: dict[str, Any] | None, runtime_status: str | None = None) -> str:
    """``released``, ``skipped/<reason>``, ``failed/<code>`` from an OnboardingResult JSON.

    Without a result the label says why: the instance never started, or how it ended.
    """
    if result is None:
        return "missing" if runtime_status is None else f"no_result/{runtime_status.lower()}"
    outcome = str(result.get("outcome"))
    if outcome == "skipped":
        return f"skipped/{result.get('skip_reason')}"
    if outcome == "failed":
        return f"failed/{result.get('failure_code')}"
    return outcome


@dataclass(frozen=True)
class VmOutcome:
    spec: VmSpec
    vm_id: str
    actual: str
    instance_id: str | None = None
    propagation_seconds: float | None = None
    drawn_delay_s: float | None = None  # the twin's RBAC delay for this VM's assignment
    release_attempts: int = 0
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.actual == self.spec.expected

    def to_json(self) -> dict[str, Any]:
        return {
            "vm_id": self.vm_id,
            "name": self.spec.name,
            "kind": self.spec.kind.value,
            "expected": self.spec.expected,
            "actual": self.actual,
            "ok": self.ok,
            "propagation_seconds": self.propagation_seconds,
            "rbac_delay_seconds": self.drawn_delay_s,
            "release_attempts": self.release_attempts,
            "instance_id": self.instance_id,
            "duplicate_events": self.spec.duplicates,
            "detail": self.detail,
        }


def build_summary(
    outcomes: list[VmOutcome],
    published_events: list[dict[str, Any]],
    *,
    seed: int,
    clock: str,
    simulated_seconds: float,
    wall_seconds: float,
    delivered_events: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON the demo writes with ``--json`` and renders at the end.

    ``delivered_events``: VM write events the twin delivered to the webhook (its own record);
    without it the count is what the fleet emitted.
    """
    propagation = [o.propagation_seconds for o in outcomes if o.propagation_seconds is not None]
    lags = [
        o.propagation_seconds - o.drawn_delay_s
        for o in outcomes
        if o.propagation_seconds is not None and o.drawn_delay_s is not None
    ]
    by_actual = Counter(o.actual for o in outcomes)
    event_types = Counter(str(e.get("type")) for e in published_events)
    mismatched = [o.spec.name for o in outcomes if not o.ok]
    summary: dict[str, Any] = {
        "ok": not mismatched and bool(outcomes),
        "seed": seed,
        "clock": clock,
        "counts": {
            "vms": len(outcomes),
            "as_expected": len(outcomes) - len(mismatched),
            "mismatched": len(mismatched),
            "by_outcome": dict(sorted(by_actual.items())),
            "write_events_emitted": sum(1 + o.spec.duplicates for o in outcomes),
            "write_events_delivered": (
                sum(1 + o.spec.duplicates for o in outcomes) if delivered_events is None else delivered_events
            ),
            "duplicate_events": sum(o.spec.duplicates for o in outcomes),
        },
        "mismatched": mismatched,
        "propagation": distribution(propagation),
        "detection_lag": distribution(lags),
        "published_events": {
            "count": len(published_events),
            "by_type": dict(sorted(event_types.items())),
        },
        "simulated_seconds": round(simulated_seconds, 1),
        "wall_seconds": round(wall_seconds, 2),
        "vms": [o.to_json() for o in outcomes],
    }
    if extra:
        summary.update(extra)
    return summary
