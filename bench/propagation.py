"""Propagation benchmark: our polling wait vs a fixed sleep vs the oracle, on the same RBAC delays.

``python -m bench.propagation [--vms N] [--seed S] [--sleep 60]``. Ours is the real orchestration
on the stack (virtual clock, the twin's empirical delay distribution). On the very delays the twin
drew, it then works out what a Terraform ``time_sleep``-style baseline (sleep S, release; on 403
sleep S again) and the oracle (release the instant the assignment takes effect) would have done.

Time-to-release (TTR) = assignment created -> the VM's release call let through by RBAC, for all
three. Detection lag (ours) = that release instant - the instant the assignment took effect.
The last stdout line is the JSON result.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bench.fleet import bench_parser, run_compliant_fleet
from bench.strategies import RunCommandTiming, fixed_sleep_release, oracle_release, ratio
from localdev.demo_stats import distribution, mean, percentile

# The twin runs the in-VM script as soon as a run command starts and the script's work costs no
# virtual time, so its release call happens at the start of the command.
RELEASE_OFFSET_S = 0.0


def figures(result: Any, sleep_s: float) -> dict[str, Any]:
    """The benchmark's JSON from one fleet run (pure: a FleetResult in, numbers out)."""
    timing = RunCommandTiming(duration_s=result.run_command_duration_s, release_offset_s=RELEASE_OFFSET_S)
    measured = [vm for vm in result.vms if vm.ttr_s is not None and vm.rbac_delay_s is not None]
    if not measured:
        raise RuntimeError(f"no VM was released ({result.failures} failures, run ended {result.ended})")
    delays = [vm.rbac_delay_s for vm in measured]
    ours = [vm.ttr_s for vm in measured]
    lags = [vm.ttr_s - vm.rbac_delay_s for vm in measured]
    baseline = [fixed_sleep_release(d, sleep_s, timing) for d in delays]
    oracle = [oracle_release(d) for d in delays]
    ttr_ours, ttr_base, ttr_oracle = mean(ours), mean([b.ttr_s for b in baseline]), mean([o.ttr_s for o in oracle])
    reported = [vm.propagation_seconds for vm in measured if vm.propagation_seconds is not None]
    return {
        "benchmark": "propagation",
        "vms": len(result.vms),
        "released": len(measured),
        "failures": result.failures,
        "lag_p50_s": round(percentile(lags, 50), 2),
        "lag_p95_s": round(percentile(lags, 95), 2),
        "lag_max_s": round(max(lags), 2),
        "lag_min_s": round(min(lags), 2),
        "ttr_ours_mean_s": round(ttr_ours, 2),
        "ttr_baseline_mean_s": round(ttr_base, 2),
        "ttr_oracle_mean_s": round(ttr_oracle, 2),
        "ratio_ours_to_oracle": ratio(ttr_ours, ttr_oracle),
        "ratio_ours_to_baseline": ratio(ttr_ours, ttr_base),
        "ttr_ours_p50_s": round(percentile(ours, 50), 2),
        "ttr_baseline_p50_s": round(percentile([b.ttr_s for b in baseline], 50), 2),
        "ttr_oracle_p50_s": round(percentile([o.ttr_s for o in oracle], 50), 2),
        "ttr_ours_p95_s": round(percentile(ours, 95), 2),
        "ttr_baseline_p95_s": round(percentile([b.ttr_s for b in baseline], 95), 2),
        "ttr_oracle_p95_s": round(percentile([o.ttr_s for o in oracle], 95), 2),
        "baseline_sleep_s": sleep_s,
        "baseline_attempts_mean": round(mean([float(b.attempts) for b in baseline]), 2),
        "baseline_failed_releases": sum(b.attempts - 1 for b in baseline),
        "ours_run_commands_mean": round(mean([float(vm.release_attempts) for vm in measured]), 2),
        "rbac_delay": distribution(delays),
        "ours_reported_propagation": distribution(reported),
        "run_command_duration_s": timing.duration_s,
        "release_offset_s": timing.release_offset_s,
    }


def main(argv: list[str]) -> int:
    p = bench_parser("propagation", __doc__ or "", vms=40, seed=1)
    p.add_argument("--sleep", type=float, default=60.0, help="the baseline's fixed sleep S in seconds (default 60)")
    args = p.parse_args(argv)
    if args.vms < 1 or args.sleep <= 0:
        p.error("--vms must be at least 1 and --sleep positive")
    result = run_compliant_fleet(args.vms, args.seed, label="propagation")
    out = figures(result, args.sleep)
    print(json.dumps(out | result.run_info(args.seed)))
    return 0 if result.failures == 0 and result.ended == "finished" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
