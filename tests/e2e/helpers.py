"""Small helpers shared by the e2e modules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from localdev.host.harness import InstanceStatus
from localdev.stack import Stack
from localdev.twin.faults import Fault
from localdev.twin.model import SimVm
from localdev.twin.rbac import PropagationModel, RoleAssignment

RUN_STAGES = (
    "inspecting_vm",
    "ensuring_key",
    "ensuring_role",
    "assigning_role",
    "waiting_for_rbac",
    "releasing",
)


def epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def assignments_of(stack: Stack, vm: SimVm) -> list[RoleAssignment]:
    with stack.twin.rbac.lock:
        return [a for a in stack.twin.rbac.assignments.values() if a.principal_id == vm.principal_id]


@contextmanager
def propagation(stack: Stack, spec: str) -> Iterator[None]:
    """Assignments created inside the block take effect after ``spec`` (a twin propagation model)."""
    saved = stack.twin.rbac.model
    stack.twin.rbac.model = PropagationModel.parse(spec)
    try:
        yield
    finally:
        stack.twin.rbac.model = saved


def onboard(stack: Stack, name: str, **vm: Any) -> tuple[SimVm, dict[str, Any]]:
    """Create a VM in the twin (its write event starts the onboarding) and wait for the result."""
    created = stack.twin.create_vm(name, **vm)
    status = stack.wait_for_onboarding(created)
    assert status.runtime_status == "Completed", status.failure_details
    return created, status.output


def published_for(stack: Stack, vm: SimVm) -> list[dict[str, Any]]:
    """CloudEvents our app published to the twin's topic about ``vm``."""
    return [r["event"] for r in stack.twin.events.published if r["event"].get("subject") == vm.resource_id]


def input_of(status: InstanceStatus) -> dict[str, Any]:
    """An instance's input as a dict (the Python client starts instances with JSON text)."""
    value = status.input
    return json.loads(value) if isinstance(value, str) else value


@contextmanager
def fault(stack: Stack, kind: str, **settings: Any) -> Iterator[Fault]:
    """A twin fault for the duration of the block."""
    added = stack.twin.faults.add(kind, **settings)
    try:
        yield added
    finally:
        stack.twin.faults.remove(added.id)


@contextmanager
def replay_guard(stack: Stack) -> Iterator[None]:
    """Every instance that finishes inside the block must replay to the same actions afterwards."""
    before = {(s.instance_id, s.last_updated_time) for s in stack.host.instances()}
    yield
    stack.settle()
    for status in stack.host.instances():
        if status.done and (status.instance_id, status.last_updated_time) not in before:
            stack.host.check_replay(status.instance_id)
