"""API cost of one onboarding: ARM reads, writes and deletes and Key Vault calls per VM.

``python -m bench.arm_calls [--vms N] [--seed S]``: onboards N compliant CVMs (each its own key,
RBAC delays from the twin's empirical distribution) and divides the twin's call counters by N.
ARM calls are the app identity's (the only ARM caller); the bucket follows ARM's throttling
classes: ``*/read`` reads, ``*/delete`` deletes, every other action (PUT, POST) a write. Key
Vault calls are the app's own (create/get, with the SDK's unauthenticated challenge requests)
plus the release calls the VMs make from inside. The last stdout line is the JSON result.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from bench.fleet import FleetResult, bench_parser, run_compliant_fleet


def arm_bucket(operation: str) -> str:
    """ARM's throttling class of an action (reads / writes / deletes)."""
    action = operation.lower()
    if action.endswith("/read"):
        return "reads"
    if action.endswith("/delete"):
        return "deletes"
    return "writes"


def tally(counters: list[dict[str, Any]], app: str, vm_principals: set[str]) -> dict[str, Counter[str]]:
    """Calls by who and what: ``arm`` (app, by bucket), ``kv_app``, ``kv_vm``, ``arm_ops``, ``kv_ops``."""
    out: dict[str, Counter[str]] = {name: Counter() for name in ("arm", "kv_app", "kv_vm", "arm_ops", "kv_ops")}
    for row in counters:
        caller, service, operation, count = row["caller"].lower(), row["service"], row["operation"], row["count"]
        if service == "arm" and caller == app:
            out["arm"][arm_bucket(operation)] += count
            out["arm_ops"][operation] += count
        elif service == "keyvault" and caller in (app, "anonymous"):
            out["kv_app"]["challenge" if caller == "anonymous" else operation] += count
            out["kv_ops"][operation if caller == app else f"{operation} (unauthenticated challenge)"] += count
        elif service == "keyvault" and caller in vm_principals:
            out["kv_vm"][operation] += count
            out["kv_ops"][f"{operation} (from the VM)"] += count
    return out


def figures(result: FleetResult) -> dict[str, Any]:
    n = len(result.vms)
    calls = tally(result.counters, result.app_principal, result.vm_principals)

    def per_vm(value: float) -> float:
        return round(value / n, 2)

    kv_app, kv_vm = sum(calls["kv_app"].values()), sum(calls["kv_vm"].values())
    return {
        "benchmark": "arm_calls",
        "vms": n,
        "failures": result.failures,
        "arm_writes_per_vm": per_vm(calls["arm"]["writes"]),
        "arm_reads_per_vm": per_vm(calls["arm"]["reads"]),
        "arm_deletes_per_vm": per_vm(calls["arm"]["deletes"]),
        "kv_calls_per_vm": per_vm(kv_app + kv_vm),
        "kv_calls_app_per_vm": per_vm(kv_app),
        "kv_release_calls_in_vm_per_vm": per_vm(kv_vm),
        "run_commands_per_vm": per_vm(sum(vm.release_attempts for vm in result.vms)),
        "arm_by_operation_per_vm": {op: per_vm(c) for op, c in sorted(calls["arm_ops"].items())},
        "kv_by_operation_per_vm": {op: per_vm(c) for op, c in sorted(calls["kv_ops"].items())},
        "throttled_429": sum(result.throttled.values()),
    }


def main(argv: list[str]) -> int:
    p = bench_parser("arm_calls", __doc__ or "", vms=20, seed=2)
    args = p.parse_args(argv)
    if args.vms < 1:
        p.error("--vms must be at least 1")
    result = run_compliant_fleet(args.vms, args.seed, label="arm_calls")
    out = figures(result)
    print(json.dumps(out | result.run_info(args.seed)))
    return 0 if result.failures == 0 and result.ended == "finished" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
