"""Run the packaged in-VM release script as a run command: start, read later, delete.

Nothing here waits for the script: ``start`` returns as soon as ARM accepted the command and the
orchestrator polls ``status`` on durable timers (a blocking LRO wait would hold a worker for
minutes - and on the twin's virtual clock it would never end). Only the parsed ``SKR-RESULT``
report leaves this module, never the raw output.

Managed run commands (default) are child resources with a deterministic name per VM and attempt,
so a replayed start re-PUTs the same command. The action run command (POST ``runCommand``) is the
fallback for old guest agents: its Azure-AsyncOperation URL is read later through the compute
client's own ARM pipeline (same credential, retries and CA bundle).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import ResourceNotFoundError
from azure.core.polling import PollingMethod
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import (
    RunCommandInput,
    RunCommandInputParameter,
    VirtualMachineRunCommand,
    VirtualMachineRunCommandProperties,
    VirtualMachineRunCommandScriptSource,
)
from pydantic import BaseModel, ConfigDict, Field

from skr.clients import ClientFactory
from skr.errors import Operation, SkrError, scrub
from skr.models import FailureCode, KeyRef, ReleaseReport, VmFacts, VmResourceId
from skr.naming import run_command_name
from skr.release_report import ReleaseReportError, parse_release_output
from skr.settings import RunCommandMode, Settings

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "vm_scripts"
LINUX_SCRIPT = SCRIPTS_DIR / "linux" / "skr_release.py"
WINDOWS_SCRIPT = SCRIPTS_DIR / "windows" / "skr_release.ps1"
DETAIL_LIMIT = 512


class CommandState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self not in (CommandState.PENDING, CommandState.RUNNING)


class CommandStart(BaseModel):
    """``start_release_command``'s value; passed back unchanged as ``get_release_command``'s input."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    vm_id: VmResourceId
    command_name: str
    mode: RunCommandMode
    operation_url: str | None = None  # action mode: the Azure-AsyncOperation (or Location) URL
    result_url: str | None = None  # action mode: the Location URL whose final GET holds the result
    started_at: datetime  # wall clock of the activity, informational (orchestrators time with their own clock)


class CommandQuery(BaseModel):
    """``get_release_command``'s input: the start value (``started_at`` optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    vm_id: VmResourceId
    command_name: str
    mode: RunCommandMode = RunCommandMode.MANAGED
    operation_url: str | None = None
    result_url: str | None = None
    started_at: datetime | None = None


class CommandStatus(BaseModel):
    """Where the command is; the release outcome is ``report`` (parsed SKR-RESULT), never the raw output."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    state: CommandState
    exit_code: int | None = None
    report: ReleaseReport | None = None
    detail: str | None = Field(default=None, max_length=DETAIL_LIMIT)


class _InitialResponse(PollingMethod[Any]):
    """Keep the first response of an LRO and poll nothing (the orchestrator polls on durable timers)."""

    response: Any = None

    def initialize(self, client: Any, initial_response: Any, deserialization_callback: Any) -> None:
        self.response = initial_response

    def run(self) -> None:
        return None

    def status(self) -> str:
        return "Succeeded"

    def finished(self) -> bool:
        return True

    def resource(self) -> Any:
        return None


@lru_cache(maxsize=4)
def _script_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def script_for(os_type: str | None) -> tuple[str, bool]:
    """(script text, windows) for the VM's OS; a script missing from the package is a clear failure."""
    windows = (os_type or "").lower() == "windows"
    path = WINDOWS_SCRIPT if windows else LINUX_SCRIPT
    try:
        return _script_text(path), windows
    except OSError as exc:
        raise SkrError.of(
            FailureCode.RUN_COMMAND_FAILED,
            f"the {'Windows' if windows else 'Linux'} release script is not packaged ({path.name}): {exc.strerror}",
            operation=Operation.RUN_COMMAND,
        ) from exc


class ReleaseCommandService:
    def __init__(self, factory: ClientFactory, settings: Settings) -> None:
        self._factory = factory
        self._settings = settings

    def _compute(self, vm_id: VmResourceId) -> ComputeManagementClient:
        return self._factory.compute(vm_id.subscription_id)

    def parameters(self, key: KeyRef, retry_window_seconds: float) -> list[RunCommandInputParameter]:
        """Named parameters (environment variables in the VM): names and endpoints only, never a secret."""
        values = {
            "SKR_VAULT_URL": key.vault_url,
            "SKR_KEY_NAME": key.name,
            "SKR_KEY_VERSION": key.version or "",
            "SKR_MAA_ENDPOINT": self._settings.maa_endpoint,
            "SKR_MODE": self._settings.release_mode.value,
            "SKR_RETRY_WINDOW_SECONDS": f"{max(0.0, retry_window_seconds):g}",
            "SKR_ENC": self._settings.release_enc.value,
        }
        # The run-command handler skips empty values; so do we, to keep the instance view tidy.
        return [RunCommandInputParameter(name=name, value=value) for name, value in values.items() if value]

    # ------------------------------------------------------------------------------ start
    def start(self, vm: VmFacts, key: KeyRef, attempt: int, retry_window_seconds: float) -> CommandStart:
        """Create (or re-PUT) this attempt's command and return at once."""
        name = run_command_name(vm.vm_id, attempt)
        script, windows = script_for(vm.os_type)
        parameters = self.parameters(key, retry_window_seconds)
        if self._settings.run_command_mode is RunCommandMode.ACTION:
            return self._start_action(vm, name, script, windows, parameters)
        location = vm.location or self._location(vm.vm_id)
        body = VirtualMachineRunCommand(
            location=location,
            properties=VirtualMachineRunCommandProperties(
                source=VirtualMachineRunCommandScriptSource(script=script),
                parameters=parameters,
                async_execution=True,
                timeout_in_seconds=self._settings.run_command_timeout_seconds,
                treat_failure_as_deployment_failure=False,
            ),
        )
        self._compute(vm.vm_id).virtual_machine_run_commands.begin_create_or_update(
            vm.vm_id.resource_group, vm.vm_id.name, name, body, polling=_InitialResponse()
        )
        return CommandStart(
            vm_id=vm.vm_id, command_name=name, mode=RunCommandMode.MANAGED, started_at=datetime.now(UTC)
        )

    def _location(self, vm_id: VmResourceId) -> str:
        vm = self._compute(vm_id).virtual_machines.get(vm_id.resource_group, vm_id.name)
        return str(vm.location)

    def _start_action(
        self, vm: VmFacts, name: str, script: str, windows: bool, parameters: list[RunCommandInputParameter]
    ) -> CommandStart:
        command = RunCommandInput(
            command_id="RunPowerShellScript" if windows else "RunShellScript",
            script=script.splitlines(),
            parameters=parameters,
        )
        capture = _InitialResponse()
        self._compute(vm.vm_id).virtual_machines.begin_run_command(
            vm.vm_id.resource_group, vm.vm_id.name, command, polling=capture
        )
        headers = capture.response.http_response.headers if capture.response is not None else {}
        location = headers.get("Location")
        return CommandStart(
            vm_id=vm.vm_id,
            command_name=name,
            mode=RunCommandMode.ACTION,
            operation_url=headers.get("Azure-AsyncOperation") or location,
            result_url=location,
            started_at=datetime.now(UTC),
        )

    # ----------------------------------------------------------------------------- status
    def status(self, query: CommandQuery) -> CommandStatus:
        if query.mode is RunCommandMode.ACTION:
            return self._action_status(query)
        vm_id = query.vm_id
        compute = self._compute(vm_id)
        try:
            command = compute.virtual_machine_run_commands.get_by_virtual_machine(
                vm_id.resource_group, vm_id.name, query.command_name, expand="instanceView"
            )
        except ResourceNotFoundError:
            compute.virtual_machines.get(vm_id.resource_group, vm_id.name)  # a deleted VM raises vm_deleted
            return CommandStatus(
                state=CommandState.FAILED, detail=f"run command {query.command_name} not found (deleted?)"
            )
        view = command.instance_view
        state = _managed_state(getattr(view, "execution_state", None), command.provisioning_state)
        exit_code = getattr(view, "exit_code", None)
        if not state.terminal:
            return CommandStatus(state=state, exit_code=exit_code)
        message = getattr(view, "execution_message", None)
        return _finished(state, exit_code, getattr(view, "output", None), message)

    def _action_status(self, query: CommandQuery) -> CommandStatus:
        if not query.operation_url:
            return CommandStatus(state=CommandState.FAILED, detail="action run command has no operation URL to read")
        status_code, body = self._arm_get(query.vm_id, query.operation_url)
        if status_code == 202:
            return CommandStatus(state=CommandState.RUNNING)
        if isinstance(body.get("value"), list):  # a Location URL answers with the RunCommandResult itself
            return _action_result(body)
        status = str(body.get("status") or "").lower()
        if status in ("", "inprogress", "running", "accepted", "notstarted"):
            return CommandStatus(state=CommandState.RUNNING)
        output = (body.get("properties") or {}).get("output")
        if isinstance(output, dict) and isinstance(output.get("value"), list):
            return _action_result(output)  # the script ran: its report decides, whatever the operation says
        if status == "canceled":
            return CommandStatus(state=CommandState.CANCELED, detail=_error_detail(body))
        if status == "failed":
            return CommandStatus(state=CommandState.FAILED, detail=_error_detail(body))
        if query.result_url:
            status_code, result = self._arm_get(query.vm_id, query.result_url)
            if status_code == 202:
                return CommandStatus(state=CommandState.RUNNING)
            return _action_result(result)
        return CommandStatus(state=CommandState.FAILED, detail="the run command succeeded but returned no output")

    def _arm_get(self, vm_id: VmResourceId, url: str) -> tuple[int, dict[str, Any]]:
        """GET an ARM operation URL through the compute client's pipeline (credential, retries, CA)."""
        arm = urlsplit(self._factory.config.arm_endpoint)
        target = urlsplit(url)
        if target.scheme != "https" or target.netloc.lower() != arm.netloc.lower():
            # Never send our ARM token anywhere but ARM, whatever the (history-stored) input says.
            raise SkrError.of(
                FailureCode.INVALID_REQUEST,
                f"operation URL host {target.netloc or '?'} is not the ARM endpoint {arm.netloc}",
                operation=Operation.RUN_COMMAND,
            )
        response = self._compute(vm_id).send_request(HttpRequest("GET", url))
        response.raise_for_status()
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        return response.status_code, body if isinstance(body, dict) else {}

    # ----------------------------------------------------------------------------- delete
    def delete(self, vm_id: VmResourceId, command_name: str) -> bool:
        """Delete the managed command (stops it if still running); False when it was already gone."""
        capture = _InitialResponse()
        try:
            self._compute(vm_id).virtual_machine_run_commands.begin_delete(
                vm_id.resource_group, vm_id.name, command_name, polling=capture
            )
        except ResourceNotFoundError:
            return False
        return capture.response is None or capture.response.http_response.status_code != 204


_MANAGED_STATES = {
    "pending": CommandState.PENDING,
    "unknown": CommandState.PENDING,
    "running": CommandState.RUNNING,
    "succeeded": CommandState.SUCCEEDED,
    "failed": CommandState.FAILED,
    "timedout": CommandState.TIMED_OUT,
    "canceled": CommandState.CANCELED,
}


def _managed_state(execution_state: Any, provisioning_state: Any) -> CommandState:
    text = str(getattr(execution_state, "value", execution_state) or "").lower()
    if text in _MANAGED_STATES:
        return _MANAGED_STATES[text]
    if str(provisioning_state or "").lower() == "failed":
        return CommandState.FAILED  # the platform could not start the script at all
    return CommandState.PENDING


def _finished(state: CommandState, exit_code: int | None, output: str | None, message: str | None) -> CommandStatus:
    """A terminal command's status: the parsed report, or why there is none (never the output)."""
    try:
        report = parse_release_output(output)
    except ReleaseReportError as exc:
        why = str(exc)
        if message:
            why = f"{why}; {message}"
        return CommandStatus(state=state, exit_code=exit_code, detail=scrub(why, DETAIL_LIMIT))
    if exit_code is None:
        exit_code = report.exit_code
    if state is CommandState.SUCCEEDED and exit_code not in (None, 0):
        state = CommandState.FAILED  # the action channel reports "succeeded" whatever the script's exit code
    return CommandStatus(state=state, exit_code=exit_code, report=report)


def _action_result(result: dict[str, Any]) -> CommandStatus:
    """RunCommandResult: Linux has one message with [stdout]/[stderr]; Windows separate StdOut/StdErr entries."""
    entries = [e for e in result.get("value") or [] if isinstance(e, dict)]
    stdout = [e for e in entries if "stderr" not in str(e.get("code", "")).lower()]
    output = "\n".join(str(e.get("message") or "") for e in stdout)
    return _finished(CommandState.SUCCEEDED, None, output, None)


def _error_detail(body: dict[str, Any]) -> str | None:
    error = body.get("error")
    if not isinstance(error, dict):
        return None
    code = str(error.get("code") or "error")
    return scrub(f"{code}: {error.get('message') or ''}", DETAIL_LIMIT)
