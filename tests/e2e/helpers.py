"""Small helpers shared by the e2e modules."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from localdev.host.harness import InstanceStatus
from localdev.stack import Stack
from localdev.twin.model import SimVm
from localdev.twin.rbac import PropagationModel, RoleAssignment


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
