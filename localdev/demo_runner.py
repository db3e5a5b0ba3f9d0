"""Runs a fleet on the stack: creates each VM at its moment on the shared clock, lets the twin
deliver its write events (duplicates included) to the app's webhook, watches the onboardings and
collects what happened — from the app's own HTTP API and the twin's records.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from localdev.clock import VirtualClock
from localdev.demo_fleet import FleetSpec, VmSpec
from localdev.demo_summary import VmOutcome, outcome_label
from localdev.demo_view import ProgressRow
from localdev.stack import Stack

WRITE_EVENT = "Microsoft.Resources.ResourceWriteSuccess"
VM_WRITE = "Microsoft.Compute/virtualMachines/write"
TERMINAL = frozenset({"Completed", "Failed", "Terminated"})
_PAGE_SIZE = 200


@dataclass
class FleetRun:
    """One fleet on one stack. ``schedule()`` once, then ``rows()``/``finished()`` while it runs."""

    stack: Stack
    fleet: FleetSpec
    start: float = 0.0
    vm_ids: dict[str, str] = field(default_factory=dict)  # VM name -> resource id
    instance_ids: dict[str, str] = field(default_factory=dict)  # VM name -> onboarding instance id
    errors: list[str] = field(default_factory=list)
    _pending: set[str] = field(default_factory=set)  # instance ids not seen finished yet

    def __post_init__(self) -> None:
        twin = self.stack.twin
        for spec in self.fleet.vms:
            vm_id = twin.vm_resource_id(spec.name, spec.resource_group)
            self.vm_ids[spec.name] = vm_id
            self.instance_ids[spec.name] = Stack.onboarding_id(vm_id)
        self._pending = set(self.instance_ids.values())

    # --- creating the fleet ------------------------------------------------------------------------
    def schedule(self) -> None:
        """Create every VM at ``start + create_offset_s`` on the stack's clock."""
        self.start = self.stack.clock.time()
        for spec in self.fleet.vms:
            self.stack.clock.call_at(self.start + spec.create_offset_s, self._creator(spec))

    def _creator(self, spec: VmSpec) -> Callable[[], None]:
        def create() -> None:
            try:
                self.create(spec)
            except Exception as exc:  # a clock callback must never raise: it would stop the clock
                self.errors.append(f"creating {spec.name}: {type(exc).__name__}: {exc}")

        return create

    def create(self, spec: VmSpec) -> None:
        """The VM appears, and ARM reports its write 1 + ``duplicates`` times (same correlation id),
        as a create followed by further writes does; each report is a real-shaped Event Grid event."""
        twin = self.stack.twin
        vm = twin.create_vm(
            spec.name,
            resource_group=spec.resource_group,
            tee=spec.kind.tee,
            identity=spec.kind.has_identity,
            tags=dict(spec.tags),
            emit_event=False,
        )
        correlation = str(uuid.uuid5(uuid.NAMESPACE_URL, f"skr-demo/{self.fleet.seed}/{vm.resource_id.lower()}"))
        for _ in range(1 + spec.duplicates):
            twin.events.resource_event(
                WRITE_EVENT, vm.resource_id, VM_WRITE, twin.operator_principal, correlation_id=correlation
            )

    # --- watching ----------------------------------------------------------------------------------
    def statuses(self) -> dict[str, Any]:
        return {s.instance_id: s for s in self.stack.host.instances(prefix="onboard-")}

    def rows(self) -> list[ProgressRow]:
        """The live table: stage, attempt and time since assignment from each custom status."""
        statuses = self.statuses()
        now = self.stack.clock.time()
        rows: list[ProgressRow] = []
        for spec in self.fleet.vms:
            status = statuses.get(self.instance_ids[spec.name])
            base = ProgressRow(name=spec.name, kind=spec.kind.value, expected=spec.expected)
            if status is None:
                created = now >= self.start + spec.create_offset_s
                rows.append(replace(base, stage="waiting_for_event" if created else "not_created_yet"))
                continue
            custom = status.custom_status if isinstance(status.custom_status, dict) else {}
            if status.runtime_status in TERMINAL:
                output = status.output if isinstance(status.output, dict) else None
                rows.append(
                    replace(
                        base,
                        stage="completed",
                        attempt=custom.get("attempt"),
                        outcome=outcome_label(output, status.runtime_status),
                    )
                )
                continue
            since = custom.get("seconds_since_assignment")
            if isinstance(since, (int, float)):
                since = float(since) + max(0.0, now - status.last_updated_time.timestamp())
            rows.append(
                replace(
                    base,
                    stage=str(custom.get("stage") or status.runtime_status.lower()),
                    attempt=custom.get("attempt"),
                    since_assignment_s=since,
                    detail=custom.get("detail"),
                )
            )
        return rows

    def expect(self, instance_ids: list[str]) -> None:
        """Watch these instances again (they were restarted, e.g. by a retry)."""
        self._pending |= set(instance_ids)

    def finished(self) -> bool:
        """Every VM's onboarding exists and has ended (only the unfinished ones are looked up)."""
        if self._pending:
            self._pending -= self._terminal(sorted(self._pending))
        return not self._pending

    def _terminal(self, instance_ids: list[str]) -> set[str]:
        store = self.stack.host.engine.store

        async def check() -> set[str]:  # on the host's loop, which owns the store
            return {iid for iid in instance_ids if (row := store.get(iid)) is not None and row.terminal}

        return self.stack.host.call(check())

    def stalled(self) -> bool:
        """On a virtual clock: nothing running and no timer left, so nothing can change any more."""
        clock = self.stack.clock
        return isinstance(clock, VirtualClock) and clock.busy_count == 0 and clock.pending_timers() == 0

    def wait(
        self, on_tick: Callable[[], None], *, wall_timeout: float, virtual_limit: float, tick_seconds: float = 0.2
    ) -> str:
        """Tick until every onboarding finished; ``finished``, ``stalled``, ``wall_timeout`` or ``virtual_limit``."""
        deadline = time.monotonic() + wall_timeout
        stalled_since: float | None = None
        while True:
            on_tick()
            if self.finished():
                return "finished"
            if self.stack.clock.time() - self.start > virtual_limit:
                return "virtual_limit"
            if time.monotonic() > deadline:
                return "wall_timeout"
            if self.stalled():
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    return "stalled"
            else:
                stalled_since = None
            time.sleep(tick_seconds)

    # --- collecting --------------------------------------------------------------------------------
    def api_views(self) -> dict[str, dict[str, Any]]:
        """Every onboarding as ``GET /api/onboardings`` returns it (all pages), by lower-case VM id."""
        views: dict[str, dict[str, Any]] = {}
        query = {"page_size": str(_PAGE_SIZE)}
        while True:
            response = self.stack.api("GET", "/api/onboardings", query=query)
            if response.status != 200:
                raise RuntimeError(f"GET /api/onboardings answered {response.status}: {response.text[:300]}")
            page = response.json()
            for item in page["items"]:
                if item.get("vm_id"):
                    views[str(item["vm_id"]).lower()] = item
            if not page.get("continuation"):
                return views
            query = {"page_size": str(_PAGE_SIZE), "continuation": page["continuation"]}

    def rbac_delays(self) -> dict[str, float]:
        """The twin's drawn propagation delay of each VM's release-role assignment, by lower-case VM id."""
        twin = self.stack.twin
        principals: dict[str, str] = {}
        for vm_id in self.vm_ids.values():
            vm = twin.find_vm(vm_id)
            if vm is not None and vm.principal_id:
                principals[vm.principal_id.lower()] = vm_id.lower()
        delays: dict[str, float] = {}
        with twin.rbac.lock:
            for assignment in twin.rbac.assignments.values():
                vm_key = principals.get(assignment.principal_id.lower())
                if vm_key is not None:
                    delays[vm_key] = round(assignment.effective_at - assignment.created_at, 3)
        return delays

    def outcomes(self) -> list[VmOutcome]:
        views = self.api_views()
        delays = self.rbac_delays()
        outcomes: list[VmOutcome] = []
        for spec in self.fleet.vms:
            vm_id = self.vm_ids[spec.name]
            view = views.get(vm_id.lower())
            result = view.get("result") if view else None
            outcomes.append(
                VmOutcome(
                    spec=spec,
                    vm_id=vm_id,
                    actual=outcome_label(result, view.get("runtime_status") if view else None),
                    instance_id=view.get("id") if view else None,
                    propagation_seconds=result.get("propagation_seconds") if result else None,
                    drawn_delay_s=delays.get(vm_id.lower()),
                    release_attempts=int(result.get("release_attempts") or 0) if result else 0,
                    detail=result.get("detail") if result else None,
                )
            )
        return outcomes

    def published_events(self) -> list[dict[str, Any]]:
        """The result CloudEvents the app published to the twin's topic, in arrival order."""
        twin = self.stack.twin
        with twin.lock:
            return [dict(record["event"]) for record in twin.events.published]

    def delivered_write_events(self) -> int:
        """VM write events of this fleet the twin delivered to the webhook with a 2xx answer."""
        ours = {vm_id.lower() for vm_id in self.vm_ids.values()}
        return sum(
            1
            for d in list(self.stack.twin.events.deliveries)
            if d["outcome"] == "delivered" and d["operation"] == VM_WRITE and str(d["subject"]).lower() in ours
        )
