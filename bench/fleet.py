"""One benchmark run: a fleet of compliant CVMs onboarded by the real app on the stack (virtual
clock), with everything the figures need captured from the twin before the stack closes."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.observe import TwinObserver
from localdev.demo_fleet import build_fleet
from localdev.demo_runner import FleetRun
from localdev.demo_summary import outcome_label
from localdev.stack import start_stack
from localdev.twin.core import TwinConfig

VIRTUAL_LIMIT_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class VmRecord:
    name: str
    vm_id: str
    principal_id: str | None
    outcome: str  # released / failed/<code> / ...
    assignment_created_at: float | None  # twin clock
    effective_at: float | None  # twin clock: the assignment starts being enforced
    released_at: float | None  # twin clock: RBAC first let this VM's release call through
    finished_at: float | None  # orchestration end (its own clock reading)
    propagation_seconds: float | None  # as the app reports it (assignment -> result read)
    release_attempts: int
    detail: str | None = None

    @property
    def rbac_delay_s(self) -> float | None:
        if self.assignment_created_at is None or self.effective_at is None:
            return None
        return self.effective_at - self.assignment_created_at

    @property
    def ttr_s(self) -> float | None:
        """Assignment created -> release call let through (the benchmarks' time-to-release)."""
        if self.assignment_created_at is None or self.released_at is None or self.outcome != "released":
            return None
        return self.released_at - self.assignment_created_at


@dataclass
class FleetResult:
    vms: list[VmRecord]
    ended: str
    start: float  # twin clock when the burst started
    wall_seconds: float
    run_command_duration_s: float
    app_principal: str
    vm_principals: set[str]
    counters: list[dict[str, Any]]
    admitted: dict[str, int]  # the app identity's requests let in, by ARM bucket
    throttled: dict[str, int]  # the app identity's 429s, by ARM bucket
    throttle_limits: dict[str, tuple[float, float]]
    propagation: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    retry: dict[str, Any] | None = None  # the bulk retry after the run, when one was asked for

    @property
    def failures(self) -> int:
        return sum(1 for vm in self.vms if vm.outcome != "released")

    def run_info(self, seed: int) -> dict[str, Any]:
        """The fields every fleet benchmark's JSON ends with."""
        return {
            "propagation_model": self.propagation,
            "clock": "virtual",
            "ended": self.ended,
            "wall_seconds": round(self.wall_seconds, 1),
            "seed": seed,
        }


def bench_parser(name: str, doc: str, *, vms: int, seed: int) -> argparse.ArgumentParser:
    """``--vms`` and ``--seed`` for ``python -m bench.<name>``; the doc's first paragraph as help."""
    p = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc.split("\n\n", maxsplit=1)[0])
    p.add_argument("--vms", type=int, default=vms, help=f"fleet size (default {vms})")
    p.add_argument("--seed", type=int, default=seed, help=f"fleet and RBAC delays (default {seed})")
    return p


def _epoch(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _progress(run: FleetRun, label: str) -> Any:
    last = [0.0]

    def tick() -> None:
        if time.monotonic() - last[0] >= 10.0:
            last[0] = time.monotonic()
            done = sum(1 for row in run.rows() if row.outcome is not None)
            elapsed = run.stack.clock.time() - run.start
            print(f"[{label}] {done}/{len(run.fleet.vms)} finished, t+{elapsed:.0f}s simulated", file=sys.stderr)

    return tick


def _bulk_retry(run: FleetRun, failure_code: str, tick: Any, wall_timeout: float) -> dict[str, Any]:
    """What an operator does after a burst: retry every onboarding that failed with this code."""
    clock = run.stack.clock
    started = clock.time()
    response = run.stack.api("POST", "/api/onboardings/retry-failed", {"failure_code": failure_code, "limit": 1000})
    if response.status != 202:
        raise RuntimeError(f"retry-failed answered {response.status}: {response.text[:300]}")
    retried: list[str] = response.json()["retried"]
    run.expect(retried)
    ended = run.wait(tick, wall_timeout=wall_timeout, virtual_limit=VIRTUAL_LIMIT_SECONDS)
    views = {view["id"]: view for view in run.api_views().values()}
    outcomes = Counter(outcome_label(views[iid].get("result"), views[iid].get("runtime_status")) for iid in retried)
    return {
        "failure_code": failure_code,
        "retried": len(retried),
        "outcomes": dict(sorted(outcomes.items())),
        "completed": outcomes.get("released", 0),
        "makespan_s": round(clock.time() - started, 1),
        "ended": ended,
    }


def run_compliant_fleet(
    vms: int,
    seed: int,
    *,
    label: str,
    propagation: str = "empirical",
    burst_seconds: float = 60.0,
    throttle: dict[str, tuple[float, float]] | None = None,
    settings: dict[str, str] | None = None,
    retry_failure_code: str | None = None,
    wall_timeout: float = 3600.0,
) -> FleetResult:
    """Onboard ``vms`` compliant CVMs (each its own key) created within ``burst_seconds``.

    With ``retry_failure_code``, onboardings that failed with that code are then bulk-retried
    through ``POST /api/onboardings/retry-failed`` and followed to their end (``FleetResult.retry``);
    everything else describes the first pass.
    """
    fleet = build_fleet(vms, seed, burst_seconds=burst_seconds, max_duplicates=0, mixed=False)
    config = TwinConfig(seed=seed, propagation=propagation)
    wall_start = time.monotonic()
    with start_stack(twin_config=config, settings=settings, host_log_level=logging.WARNING) as stack:
        twin = stack.twin
        if throttle:
            twin.throttle.configure(enabled=True, **throttle)
        observer = TwinObserver(twin).attach()
        run = FleetRun(stack, fleet)
        run.schedule()
        ended = run.wait(_progress(run, label), wall_timeout=wall_timeout, virtual_limit=VIRTUAL_LIMIT_SECONDS)
        views = run.api_views()
        app = twin.app_principal.object_id.lower()
        records: list[VmRecord] = []
        vm_principals: set[str] = set()
        for spec in fleet.vms:
            vm_id = run.vm_ids[spec.name]
            vm = twin.find_vm(vm_id)
            principal = vm.principal_id.lower() if vm is not None and vm.principal_id else None
            if principal:
                vm_principals.add(principal)
            with twin.rbac.lock:
                assignment = next(
                    (a for a in twin.rbac.assignments.values() if principal and a.principal_id == principal), None
                )
            view = views.get(vm_id.lower()) or {}
            result = view.get("result") or {}
            records.append(
                VmRecord(
                    name=spec.name,
                    vm_id=vm_id,
                    principal_id=principal,
                    outcome=outcome_label(result or None, view.get("runtime_status")),
                    assignment_created_at=assignment.created_at if assignment else None,
                    effective_at=assignment.effective_at if assignment else None,
                    released_at=observer.first_release_allowed.get(principal) if principal else None,
                    finished_at=_epoch(result.get("finished_at")),
                    propagation_seconds=result.get("propagation_seconds"),
                    release_attempts=int(result.get("release_attempts") or 0),
                    detail=result.get("detail"),
                )
            )
        counters = twin.counters.rows()
        admitted = observer.for_principal(observer.admitted, app)
        throttled = observer.for_principal(observer.throttled, app)
        retry = None
        if retry_failure_code and any(vm.outcome == f"failed/{retry_failure_code}" for vm in records):
            retry = _bulk_retry(run, retry_failure_code, _progress(run, f"{label} retry"), wall_timeout)
        return FleetResult(
            vms=records,
            ended=ended,
            start=run.start,
            wall_seconds=time.monotonic() - wall_start,
            run_command_duration_s=twin.config.run_command_duration_seconds,
            app_principal=app,
            vm_principals=vm_principals,
            counters=counters,
            admitted=admitted,
            throttled=throttled,
            retry=retry,
            throttle_limits=dict(twin.throttle.limits),
            propagation=config.propagation_model.describe(),
            errors=list(run.errors),
        )
