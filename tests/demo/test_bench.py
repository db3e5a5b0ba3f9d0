"""Benchmark figures from known fleet results, and the twin taps they rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import arm_calls, burst, propagation
from bench.__main__ import last_json_line
from bench.fleet import FleetResult, VmRecord
from bench.observe import RELEASE_ACTION, TwinObserver
from localdev.twin.core import Twin

ROOT = Path(__file__).resolve().parents[2]
APP = "app-oid"


def _vm(name: str, delay: float, lag: float, *, outcome: str = "released", finished: float = 0.0) -> VmRecord:
    created = 1000.0
    return VmRecord(name=name, vm_id=f"/vm/{name}", principal_id=f"p-{name}", outcome=outcome,
                    assignment_created_at=created, effective_at=created + delay,
                    released_at=created + delay + lag if outcome == "released" else None,
                    finished_at=finished or None, propagation_seconds=delay + lag + 20, release_attempts=1)


def _result(vms: list[VmRecord], **overrides) -> FleetResult:
    base = dict(vms=vms, ended="finished", start=900.0, wall_seconds=1.0, run_command_duration_s=20.0,
                app_principal=APP, vm_principals={vm.principal_id for vm in vms if vm.principal_id},
                counters=[], admitted={}, throttled={}, throttle_limits={"reads": (10.0, 1.0), "writes": (8.0, 0.4),
                                                                          "deletes": (8.0, 0.4)},
                propagation={"kind": "fixed", "params": [30.0]})
    base.update(overrides)
    return FleetResult(**base)


def test_propagation_figures_compare_ours_with_baseline_and_oracle_on_the_same_delays() -> None:
    # delays 10 s and 100 s; we released 2 s and 4 s after the effect
    out = propagation.figures(_result([_vm("a", 10.0, 2.0), _vm("b", 100.0, 4.0)]), sleep_s=60.0)
    assert out["ttr_oracle_mean_s"] == 55.0  # (10 + 100) / 2
    assert out["ttr_ours_mean_s"] == 58.0  # (12 + 104) / 2
    # baseline: 60 s for the first; the second misses at 60, fails for 20 s, sleeps 60: 140 s
    assert out["ttr_baseline_mean_s"] == 100.0
    assert out["ratio_ours_to_oracle"] == round(58 / 55, 3)
    assert out["ratio_ours_to_baseline"] == 0.58
    assert (out["lag_max_s"], out["lag_min_s"]) == (4.0, 2.0)
    assert out["baseline_failed_releases"] == 1 and out["failures"] == 0


def test_propagation_counts_failures_and_refuses_a_run_without_releases() -> None:
    out = propagation.figures(_result([_vm("a", 10.0, 1.0), _vm("b", 10.0, 0.0, outcome="failed/throttled")]), 60.0)
    assert out["failures"] == 1 and out["released"] == 1
    with pytest.raises(RuntimeError, match="no VM was released"):
        propagation.figures(_result([_vm("b", 10.0, 0.0, outcome="failed/throttled")]), 60.0)


def test_arm_calls_buckets_by_action_and_splits_key_vault_callers() -> None:
    assert [arm_calls.arm_bucket(op) for op in (
        "Microsoft.Compute/virtualMachines/read", "Microsoft.Compute/virtualMachines/runCommands/write",
        "Microsoft.Compute/virtualMachines/runCommands/delete", "Microsoft.Compute/virtualMachines/runCommand/action",
    )] == ["reads", "writes", "deletes", "writes"]
    vms = [_vm("a", 5.0, 1.0), _vm("b", 5.0, 1.0)]
    counters = [
        {"caller": APP, "service": "arm", "operation": "Microsoft.Compute/virtualMachines/read", "count": 4},
        {"caller": APP, "service": "arm", "operation": "Microsoft.Authorization/roleAssignments/write", "count": 2},
        {"caller": APP, "service": "arm", "operation": "Microsoft.Compute/virtualMachines/runCommands/delete",
         "count": 2},
        {"caller": APP, "service": "keyvault", "operation": "Microsoft.KeyVault/vaults/keys/create/action", "count": 2},
        {"caller": "anonymous", "service": "keyvault", "operation": "Microsoft.KeyVault/vaults/keys/read", "count": 1},
        {"caller": "p-a", "service": "keyvault", "operation": RELEASE_ACTION, "count": 3},
        {"caller": "p-b", "service": "keyvault", "operation": RELEASE_ACTION, "count": 1},
        {"caller": "someone-else", "service": "arm", "operation": "Microsoft.Compute/virtualMachines/read",
         "count": 50},
    ]
    out = arm_calls.figures(_result(vms, counters=counters))
    assert (out["arm_reads_per_vm"], out["arm_writes_per_vm"], out["arm_deletes_per_vm"]) == (2.0, 1.0, 1.0)
    assert (out["kv_calls_app_per_vm"], out["kv_release_calls_in_vm_per_vm"], out["kv_calls_per_vm"]) == (1.5, 2.0, 3.5)


def test_burst_scales_every_bucket_and_divides_the_makespan_by_the_write_bound() -> None:
    assert burst.scaled_buckets(1.0) == {"reads": (250.0, 25.0), "writes": (200.0, 10.0), "deletes": (200.0, 10.0)}
    assert burst.scaled_buckets(0.001)["writes"] == (1.0, 0.01)  # a burst never below one request
    with pytest.raises(ValueError, match="positive"):
        burst.scaled_buckets(0)
    vms = [_vm("a", 30.0, 1.0, finished=1100.0), _vm("b", 30.0, 1.0, outcome="failed/throttled", finished=1150.0)]
    out = burst.figures(_result(vms, admitted={"writes": 20, "reads": 200, "deletes": 4},
                                throttled={"reads": 7, "writes": 2}), scale=0.04, window_s=60.0)
    assert (out["completed"], out["failed"], out["throttled_429"]) == (1, 1, 9)
    assert out["makespan_s"] == 250.0  # 1150 - 900
    assert out["bound_s"] == 50.0 and out["makespan_ratio_to_bound"] == 5.0  # 20 writes / 0.4 per s
    assert out["binding_bucket"] == "reads" and out["binding_bound_s"] == 200.0


def test_the_observer_sees_release_grants_and_throttling_without_changing_them(virtual_twin: Twin) -> None:
    twin = virtual_twin
    observer = TwinObserver(twin).attach()
    vm = twin.create_vm("cvm-obs", emit_event=False)
    vault = twin.vault()
    key_scope = f"{vault.resource_id}/keys/k1"
    denied = twin.rbac.check(vm.principal_id, RELEASE_ACTION, key_scope, data_action=True)
    twin.grant(vm.principal_id, "Key Vault Crypto Service Release User", key_scope)
    allowed = twin.rbac.check(vm.principal_id, RELEASE_ACTION, key_scope, data_action=True)
    assert (denied.allowed, allowed.allowed) == (False, True)
    assert observer.first_release_allowed == {vm.principal_id.lower(): twin.clock.time()}
    assert observer.release_checks[vm.principal_id.lower()] == 2
    twin.throttle.configure(writes=(1.0, 0.001))
    outcomes = [twin.throttle.take("who", "writes").allowed for _ in range(3)]
    assert outcomes == [True, False, False]
    assert observer.for_principal(observer.admitted, "who") == {"writes": 1}
    assert observer.for_principal(observer.throttled, "who") == {"writes": 2}


def test_last_json_line_takes_only_a_final_json_object() -> None:
    assert last_json_line('progress\n{"a": 1}\n') == {"a": 1}
    assert last_json_line('{"a": 1}\nnot json\n') is None
    assert last_json_line("[1, 2]") is None
    assert last_json_line("") is None


def test_the_runner_prints_each_benchmarks_json_and_a_final_summary() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--only", "arm_calls"], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert lines[0]["benchmark"] == "arm_calls" and lines[0]["failures"] == 0
    assert lines[0]["arm_writes_per_vm"] >= 2  # the role assignment and at least one run command per VM
    assert lines[-1]["benchmarks"]["arm_calls"] == lines[0]
    assert lines[-1]["commands"] == {"arm_calls": "python -m bench.arm_calls --vms 8"}
    assert lines[-1]["failed"] == []
    assert "$ python -m bench.arm_calls --vms 8" in done.stderr


def test_a_small_burst_is_throttled_and_any_throttled_failure_is_retried_in_bulk() -> None:
    from bench.fleet import run_compliant_fleet

    scale = 0.006  # six VMs against buckets scaled like 1,000 against Azure's: same contention
    result = run_compliant_fleet(6, 3, label="test-burst", propagation="fixed:30",
                                 throttle=burst.scaled_buckets(scale), settings=burst.SETTINGS,
                                 retry_failure_code="throttled", wall_timeout=240)
    out = burst.figures(result, scale=scale, window_s=60.0)
    assert result.ended == "finished"
    assert out["throttled_429"] > 0 and out["throttled_by_bucket"]
    assert out["completed"] + out["failed"] == 6
    assert sum(out["outcomes"].values()) == 6
    assert out["writes_needed"] >= 6  # one role assignment per VM at least
    assert out["makespan_s"] > 0 and out["makespan_ratio_to_bound"] > 0
    throttled = out["outcomes"].get("failed/throttled", 0)
    retry = out["retry_after_burst"]
    if throttled:
        assert retry["retried"] == throttled and retry["ended"] == "finished"
        assert sum(retry["outcomes"].values()) == throttled
    else:
        assert retry is None
