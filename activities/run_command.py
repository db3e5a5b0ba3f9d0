"""Run-command activities: start the in-VM release, read its status and report, delete it."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df
from pydantic import BaseModel, ConfigDict, Field

from activities._common import factory, parse_input, run, settings
from skr.errors import Operation, SkrError
from skr.models import FailureCode, KeyRef, VmFacts, VmResourceId
from skr.services.run_command import CommandQuery, CommandStart, ReleaseCommandService

bp = df.Blueprint()


class StartInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    vm: VmFacts
    key: KeyRef
    attempt: int = Field(ge=1, le=999)
    retry_window_seconds: float = Field(ge=0, le=5400)


class DeleteInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    vm_id: VmResourceId
    command_name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")


class Deleted(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    deleted: bool


def _service() -> ReleaseCommandService:
    return ReleaseCommandService(factory(), settings())


@bp.activity_trigger(input_name="payload")
def start_release_command(payload: Any) -> dict[str, Any]:
    """Start this attempt's run command and return at once (conflict -> retryable run_command_conflict)."""
    request = parse_input("start_release_command", StartInput, payload)

    def call() -> CommandStart:
        if not settings().in_scope(request.vm.vm_id, request.vm.tags):
            raise SkrError.of(
                FailureCode.INVALID_REQUEST,
                f"VM {request.vm.vm_id} is outside the configured scopes; refusing to run a command on it",
                operation=Operation.RUN_COMMAND,
            )
        return _service().start(request.vm, request.key, request.attempt, request.retry_window_seconds)

    return run("start_release_command", Operation.RUN_COMMAND, call, subject=request.vm.vm_id)


@bp.activity_trigger(input_name="payload")
def get_release_command(payload: Any) -> dict[str, Any]:
    """State, exit code and the parsed SKR-RESULT report of a started command (never its raw output)."""
    request = parse_input("get_release_command", CommandQuery, payload)
    return run("get_release_command", Operation.RUN_COMMAND, lambda: _service().status(request), subject=request.vm_id)


@bp.activity_trigger(input_name="payload")
def delete_release_command(payload: Any) -> dict[str, Any]:
    """Delete the managed run command (idempotent: deleted=false when it was already gone)."""
    request = parse_input("delete_release_command", DeleteInput, payload)
    return run(
        "delete_release_command",
        Operation.RUN_COMMAND,
        lambda: Deleted(deleted=_service().delete(request.vm_id, request.command_name)),
        subject=request.vm_id,
    )
