"""Burst benchmark: a fleet of CVMs created within one minute, under ARM's throttling model.

``python -m bench.burst [--vms 1000] [--window 60] [--throttle-scale auto] [--propagation fixed:30]``.
Every ARM call of the app identity draws from the twin's per-principal token buckets (writes and
deletes 200 burst / 10 per s, reads 250 / 25 per s) and gets 429 + Retry-After when a bucket is
empty; the orchestrations wait those out on durable timers. Figures: ``completed``, ``failed``,
``throttled_429`` and ``makespan_ratio_to_bound`` = makespan / (writes needed / write refill
rate), where the makespan runs from the first VM creation to the last onboarding's end. Then,
as an operator would, it retries the onboardings that failed as ``throttled`` through
``POST /api/onboardings/retry-failed`` and reports how that went (``retry_after_burst``).

Scaling (explicit in the JSON): the real in-VM script runs as a subprocess for every release, so
fleets far below 1,000 VMs are what fits a CI budget. ``--throttle-scale auto`` multiplies every
bucket's burst and refill rate by N/1000, so N VMs against the scaled buckets pose the same
contention as 1,000 VMs against Azure's: the bound (writes needed / refill) is the same number of
seconds. ``--vms 1000 --throttle-scale 1`` is the unscaled run. The last stdout line is the JSON.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from bench.fleet import FleetResult, bench_parser, run_compliant_fleet
from bench.strategies import ratio
from localdev.twin.core import TwinConfig

REFERENCE_FLEET = 1000
# The SDK's own in-process retry sleeps a short Retry-After in real time while the virtual clock
# stands still, so the bucket cannot refill and the retry is refused again: pure wall-clock cost.
# Without it every 429 goes straight to the orchestrator's durable-timer wait, which the virtual
# clock does model; the app's outcome is the same.
SETTINGS = {"SKR_SDK_RETRY_TOTAL": "0"}
AZURE_BUCKETS = {
    "reads": TwinConfig.throttle_reads,
    "writes": TwinConfig.throttle_writes,
    "deletes": TwinConfig.throttle_deletes,
}


def scaled_buckets(scale: float) -> dict[str, tuple[float, float]]:
    """Azure's (burst, refill per second) for each bucket, times ``scale`` (burst at least 1)."""
    if scale <= 0:
        raise ValueError(f"the throttle scale must be positive, got {scale}")
    return {kind: (max(1.0, burst * scale), rate * scale) for kind, (burst, rate) in AZURE_BUCKETS.items()}


def figures(result: FleetResult, *, scale: float, window_s: float) -> dict[str, Any]:
    outcomes = Counter(vm.outcome for vm in result.vms)
    finished = [vm.finished_at for vm in result.vms if vm.finished_at is not None]
    makespan = (max(finished) - result.start) if finished else None
    limits = result.throttle_limits
    bounds = {kind: result.admitted.get(kind, 0) / limits[kind][1] for kind in ("writes", "reads", "deletes")}
    binding = max(bounds, key=lambda kind: bounds[kind])
    return {
        "benchmark": "burst",
        "vms": len(result.vms),
        "creation_window_s": window_s,
        "completed": outcomes.get("released", 0),
        "failed": len(result.vms) - outcomes.get("released", 0),
        "outcomes": dict(sorted(outcomes.items())),
        "throttled_429": sum(result.throttled.values()),
        "throttled_by_bucket": dict(sorted(result.throttled.items())),
        "writes_needed": result.admitted.get("writes", 0),
        "reads_needed": result.admitted.get("reads", 0),
        "deletes_needed": result.admitted.get("deletes", 0),
        "makespan_s": None if makespan is None else round(makespan, 1),
        "bound_s": round(bounds["writes"], 1),
        "makespan_ratio_to_bound": None if makespan is None else ratio(makespan, bounds["writes"]),
        "binding_bucket": binding,
        "binding_bound_s": round(bounds[binding], 1),
        "makespan_ratio_to_binding_bound": None if makespan is None else ratio(makespan, bounds[binding]),
        "retry_after_burst": result.retry,
        "throttle_scale": round(scale, 4),
        "throttle_buckets": {kind: [round(b, 3), round(r, 4)] for kind, (b, r) in sorted(limits.items())},
        "run_command": "real in-VM script (subprocess) for every release",
        "app_settings": SETTINGS,
    }


def main(argv: list[str]) -> int:
    p = bench_parser("burst", __doc__ or "", vms=REFERENCE_FLEET, seed=3)
    p.add_argument("--window", type=float, default=60.0, help="the VMs are created within this many seconds")
    p.add_argument("--throttle-scale", default="auto",
                   help="multiply every bucket's burst and refill by this; auto = vms/1000 (default)")
    p.add_argument("--propagation", default="fixed:30",
                   help="RBAC delay model (twin spec: fixed:S, uniform:A:B, empirical; default fixed:30, so the "
                        "makespan measures throttling rather than the delay tail)")
    p.add_argument("--timeout", type=float, default=6 * 3600.0, help="give up after this many real seconds")
    p.add_argument("--no-retry", action="store_true",
                   help="skip the bulk retry of failed/throttled onboardings after the burst")
    args = p.parse_args(argv)
    if args.vms < 1 or args.window < 0:
        p.error("--vms must be at least 1 and --window non-negative")
    try:
        scale = args.vms / REFERENCE_FLEET if args.throttle_scale == "auto" else float(args.throttle_scale)
        buckets = scaled_buckets(scale)
    except ValueError as exc:
        p.error(f"--throttle-scale: {exc}")
    result = run_compliant_fleet(
        args.vms, args.seed, label="burst", propagation=args.propagation, burst_seconds=args.window,
        throttle=buckets, settings=SETTINGS, wall_timeout=args.timeout,
        retry_failure_code=None if args.no_retry else "throttled",
    )
    out = figures(result, scale=scale, window_s=args.window)
    print(json.dumps(out | result.run_info(args.seed)))
    return 0 if result.ended == "finished" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
