"""RBAC activities: the release role, its key-scope assignment, reads, listing and removal."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df
from pydantic import BaseModel, ConfigDict

from activities._common import Empty, factory, parse_input, run, settings
from skr.errors import Operation
from skr.models import AssignmentRef, KeyRef, OffboardingRequest, RoleAssignmentId, RoleRef
from skr.services.rbac import RbacService

bp = df.Blueprint()


class AssignInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    key: KeyRef
    principal_id: str
    role: RoleRef


class GetAssignmentInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    assignment_id: RoleAssignmentId


class ListAssignmentsInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    principal_id: str | None = None


class AssignmentList(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    assignments: list[AssignmentRef]


def _service() -> RbacService:
    return RbacService(factory(), settings())


@bp.activity_trigger(input_name="payload")
def ensure_release_role(payload: Any) -> dict[str, Any]:
    """RoleRef of the built-in release role, or of the custom one (created when missing)."""
    parse_input("ensure_release_role", Empty, payload)
    return run("ensure_release_role", Operation.ROLE_DEFINITION, lambda: _service().ensure_release_role())


@bp.activity_trigger(input_name="payload")
def assign_release_role(payload: Any) -> dict[str, Any]:
    """AssignmentRef at key scope (created=false when it already existed); PrincipalNotFound is retryable."""
    request = parse_input("assign_release_role", AssignInput, payload)
    return run(
        "assign_release_role",
        Operation.ROLE_ASSIGNMENT_WRITE,
        lambda: _service().assign(request.key, request.principal_id, request.role),
        subject=request.key.name,
    )


@bp.activity_trigger(input_name="payload")
def get_role_assignment(payload: Any) -> dict[str, Any]:
    """AssignmentRef as ARM has it, or null while it is not (yet) readable."""
    request = parse_input("get_role_assignment", GetAssignmentInput, payload)
    return run(
        "get_role_assignment",
        Operation.ROLE_ASSIGNMENT_READ,
        lambda: _service().get_assignment(request.assignment_id),
        subject=request.assignment_id.guid,
    )


@bp.activity_trigger(input_name="payload")
def list_release_assignments(payload: Any) -> dict[str, Any]:
    """Release-role assignments at key scopes of the configured vault (optionally of one principal)."""
    request = parse_input("list_release_assignments", ListAssignmentsInput, payload)
    return run(
        "list_release_assignments",
        Operation.ROLE_ASSIGNMENT_READ,
        lambda: AssignmentList(assignments=_service().list_release_assignments(request.principal_id)),
    )


@bp.activity_trigger(input_name="payload")
def remove_role_assignments(payload: Any) -> dict[str, Any]:
    """OffboardingResult: the VM's release-role assignments removed (already absent is fine)."""
    request = parse_input("remove_role_assignments", OffboardingRequest, payload)
    return run(
        "remove_role_assignments",
        Operation.ROLE_ASSIGNMENT_DELETE,
        lambda: _service().remove_assignments(request),
        subject=request.vm_id,
    )
