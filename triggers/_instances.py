"""Client-side instance operations shared by every entry point (events, HTTP, reconcile).

Instance ids are deterministic per VM, so "is one already there?" is a status read, and a start
that loses a race to a concurrent duplicate fails at the Durable extension (it refuses to start
over a pending or running instance), which we detect and treat as "already running".
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from skr.models import OffboardingRequest, OnboardingRequest, TriggerSource, VmResourceId
from skr.naming import InstanceKind, offboarding_instance_id, onboarding_instance_id
from skr.settings import Settings
from skr.workflow.configure import offboarding_options, onboarding_options
from skr.workflow.inputs import OffboardInput, OnboardInput
from skr.workflow.instances import (
    InstanceSnapshot,
    StartAction,
    StartDecision,
    VmIdentity,
    decide_onboarding,
    offboarding_request,
)

log = logging.getLogger("skr.triggers")

ONBOARD_ORCHESTRATOR = "onboard_cvm"
OFFBOARD_ORCHESTRATOR = "offboard_cvm"
ONBOARD_PREFIX = f"{InstanceKind.ONBOARD.value}-"
OFFBOARD_PREFIX = f"{InstanceKind.OFFBOARD.value}-"

IdentityReader = Callable[[], Awaitable[VmIdentity | None]]

_LOCKS: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


@asynccontextmanager
async def serialised(instance_id: str) -> AsyncIterator[None]:
    """One check-then-start at a time per instance id in this worker.

    Without it, a duplicate event could read "no instance", the first copy could start *and
    finish* the instance (fast on a virtual clock), and the duplicate's start would then restart
    it. Across workers the extension's refusal to start over a running instance still holds.
    """
    lock = _LOCKS.get(instance_id)
    if lock is None:
        lock = _LOCKS[instance_id] = asyncio.Lock()
    async with lock:
        yield


def json_value(value: Any) -> Any:
    """Inputs of Python-started instances come back as JSON *text* (the client encodes twice)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def snapshot_of(status: Any) -> InstanceSnapshot | None:
    """A DurableOrchestrationStatus as a snapshot; None for "no such instance"."""
    if not status or not getattr(status, "instance_id", None):
        return None
    runtime = status.runtime_status
    return InstanceSnapshot(
        instance_id=status.instance_id,
        name=status.name,
        runtime_status=getattr(runtime, "value", runtime),
        created_time=status.created_time,
        last_updated_time=status.last_updated_time,
        custom_status=status.custom_status,
        output=status.output,
        input=json_value(status.input_),
    )


class Instances:
    """The Durable client, reduced to what our entry points do with it."""

    def __init__(self, client: df.DurableOrchestrationClient) -> None:
        self.client = client

    async def get(self, instance_id: str, *, show_input: bool = False) -> InstanceSnapshot | None:
        try:
            status = await self.client.get_status(instance_id, show_input=show_input)
        except TypeError:
            return None  # the 1.x client cannot build a status from a body-less 404
        return snapshot_of(status)

    async def list(
        self, prefix: str, *, created_from: datetime | None = None, created_to: datetime | None = None
    ) -> list[InstanceSnapshot]:
        statuses = await self.client.get_status_by(
            created_time_from=created_from, created_time_to=created_to, instance_id_prefix=prefix
        )
        found = (snapshot_of(status) for status in statuses)
        return [s for s in found if s is not None and s.instance_id.startswith(prefix)]

    async def start(self, orchestrator: str, instance_id: str, payload: dict[str, Any]) -> bool:
        """Start (or restart) ``instance_id``; False when a concurrent duplicate got there first."""
        try:
            await self.client.start_new(orchestrator, instance_id, payload)
        except Exception:
            current = await self.get(instance_id)
            if current is not None and current.active:
                log.info("%s is already %s; not starting it twice", instance_id, current.runtime_status)
                return False
            raise
        return True


async def start_onboarding(
    instances: Instances,
    request: OnboardingRequest,
    settings: Settings,
    *,
    explicit: bool,
    identity: IdentityReader | None = None,
) -> tuple[StartDecision, str]:
    """Apply the shared start rules to one VM; returns the decision taken and the instance id.

    The status is read under the per-instance lock, so the decision is made on fresh facts.
    ``identity`` is only awaited when a finished instance exists: it gives the VM's current identity
    to tell "nothing changed" from "VM identity changed" (whose old grant the new run removes).
    """
    instance_id = onboarding_instance_id(request.vm_id)
    async with serialised(instance_id):
        existing = await instances.get(instance_id)
        current = None
        if existing is not None and not existing.active and identity is not None:
            current = await identity()
        decision = decide_onboarding(existing, current, explicit=explicit)
        if not decision.starts:
            return decision, instance_id
        payload = OnboardInput(
            request=request, options=onboarding_options(settings), supersedes=decision.supersedes
        ).to_json()
        if not await instances.start(ONBOARD_ORCHESTRATOR, instance_id, payload):
            return StartDecision(action=StartAction.SKIP_RUNNING, reason="a duplicate started it first"), instance_id
    log.info("onboarding %s %s (%s): %s", request.vm_id, decision.action.value, request.source.value, decision.reason)
    return decision, instance_id


class OffboardSkip(Exception):  # noqa: N818 - an expected outcome, not an error
    """Why no offboarding was started (the message says it; ``conflict`` marks "busy, try later")."""

    def __init__(self, message: str, *, conflict: bool = False, missing: bool = False) -> None:
        super().__init__(message)
        self.conflict = conflict
        self.missing = missing


async def start_offboarding(
    instances: Instances, vm_id: VmResourceId, settings: Settings, *, source: TriggerSource
) -> str:
    """Start ``offboard_cvm`` from the VM's onboarding result; raises OffboardSkip when there is nothing to do."""
    onboarding = await instances.get(onboarding_instance_id(vm_id))
    if onboarding is None:
        raise OffboardSkip(f"{vm_id} was never onboarded; nothing to remove", missing=True)
    if onboarding.active:
        raise OffboardSkip(
            f"the onboarding of {vm_id} is still {onboarding.runtime_status}; it removes its own grant when it "
            "finds the VM gone, and reconcile covers the rest",
            conflict=True,
        )
    result = onboarding.result
    if result is None or (result.assignment is None and result.principal_id is None):
        raise OffboardSkip(f"the onboarding of {vm_id} recorded no identity or assignment; nothing to remove")
    request = offboarding_request(result, disable_key=settings.disable_key_on_offboard, source=source)
    return await start_offboarding_request(instances, request, settings)


async def start_offboarding_request(instances: Instances, request: OffboardingRequest, settings: Settings) -> str:
    instance_id = offboarding_instance_id(request.vm_id)
    async with serialised(instance_id):
        return await _start_offboarding(instances, request, settings, instance_id)


async def _start_offboarding(
    instances: Instances, request: OffboardingRequest, settings: Settings, instance_id: str
) -> str:
    existing = await instances.get(instance_id)
    if existing is not None and existing.active:
        raise OffboardSkip(f"offboarding of {request.vm_id} is already {existing.runtime_status}", conflict=True)
    done = existing.offboarding_result if existing is not None else None
    if done is not None and request.assignment_ids:
        handled = {str(a).lower() for a in (*done.removed_assignments, *done.already_absent)}
        if all(str(a).lower() in handled for a in request.assignment_ids):
            raise OffboardSkip(f"{request.vm_id} is already offboarded")
    payload = OffboardInput(request=request, options=offboarding_options(settings)).to_json()
    if not await instances.start(OFFBOARD_ORCHESTRATOR, instance_id, payload):
        raise OffboardSkip(f"offboarding of {request.vm_id} was started by a duplicate", conflict=True)
    log.info("offboarding %s (%s)", request.vm_id, request.source.value)
    return instance_id
