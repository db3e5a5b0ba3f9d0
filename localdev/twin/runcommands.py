"""ARM Compute run commands (reference azure_rest.md §2.3-2.4), executed by ``runexec``.

* Action run command: ``POST .../virtualMachines/{vm}/runCommand`` -> 202 with
  ``Azure-AsyncOperation`` and ``Location``; the operation ends ``Succeeded`` with the Linux
  ``RunCommandResult`` (``ProvisioningState/succeeded`` or ``/failed``, message
  ``Enable succeeded: \\n[stdout]\\n...\\n[stderr]\\n...``) served by the Location URL.
* Managed run commands: ``PUT/GET/DELETE .../virtualMachines/{vm}/runCommands/{name}`` and the
  list; ``$expand=instanceView`` gives executionState/exitCode/output/error (last 4,096 bytes)/
  startTime/endTime. ``asyncExecution`` ends provisioning when the script starts;
  ``treatFailureAsDeploymentFailure`` turns a failed script into a failed deployment.
* One command at a time per VM: a second one gets 409 ``Conflict`` "Run command extension
  execution is in progress..." (also the ``runcommand_conflict`` fault).
* Every instance view served and every action result is appended to ``run_command_log(twin)`` so
  a test can scan everything the API ever showed for secrets.

Choices where Azure is silent: ``protectedParameters`` and ``runAsPassword`` are never echoed; a
failed deployment's error code is ``VMExtensionProvisioningError``; a run on a VM deleted
meanwhile fails with ``OperationPreempted``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from localdev.twin.arm import require_api_version, require_subscription
from localdev.twin.attached import attached
from localdev.twin.http import arm_fail, ci_route, read_json
from localdev.twin.model import Principal, SimVm
from localdev.twin.rbac import iso
from localdev.twin.resource_ids import vm_resource_id
from localdev.twin.runexec import Execution, VmBusyError, executor_for

if TYPE_CHECKING:
    from localdev.twin.core import Twin

_VM = "Microsoft.Compute/virtualMachines"
ACTION = f"{_VM}/runCommand/action"
WRITE, READ, DELETE = f"{_VM}/runCommands/write", f"{_VM}/runCommands/read", f"{_VM}/runCommands/delete"
RC_TYPE = f"{_VM}/runCommands"
SHELLS = {"Linux": "RunShellScript", "Windows": "RunPowerShellScript"}
CONFLICT = ("Run command extension execution is in progress. Please wait for completion before invoking a run "
            "command.")
_ECHOED = ("source", "parameters", "asyncExecution", "runAsUser", "timeoutInSeconds", "outputBlobUri",
           "errorBlobUri", "treatFailureAsDeploymentFailure")


@dataclass
class ManagedCommand:
    """A ``runCommands/{name}`` resource of one VM and its latest execution."""

    name: str
    vm: SimVm
    location: str
    properties: dict[str, Any]  # as sent, minus secrets
    tags: dict[str, str]
    execution: Execution | None = None
    provisioning_state: str = "Creating"

    @property
    def resource_id(self) -> str:
        return f"{self.vm.resource_id}/runCommands/{self.name}"


@dataclass
class RunCommandState:
    managed: dict[tuple[str, str], ManagedCommand] = field(default_factory=dict)  # (vm key, name lower)
    log: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _state(twin: Twin) -> RunCommandState:
    return attached(twin, "runcommands.state", RunCommandState)


def run_command_log(twin: Twin) -> list[dict[str, Any]]:
    """Everything the run-command API has shown: instance views and action results (copies)."""
    state = _state(twin)
    with state.lock:
        return [dict(entry) for entry in state.log]


def managed_command(twin: Twin, vm: SimVm, name: str) -> ManagedCommand | None:
    """The managed run command ``name`` of ``vm`` (with its latest execution), if it exists."""
    state = _state(twin)
    with state.lock:
        return state.managed.get((vm.key, name.lower()))


def _record(twin: Twin, kind: str, vm: SimVm, name: str | None, shown: dict[str, Any]) -> None:
    state = _state(twin)
    with state.lock:
        state.log.append({"kind": kind, "vm": vm.resource_id, "name": name, "at": twin.clock.time(), "shown": shown})


# ------------------------------------------------------------------------------- shapes
def instance_view(execution: Execution | None) -> dict[str, Any]:
    """``properties.instanceView`` of a managed run command."""
    if execution is None:
        return {"executionState": "Pending", "executionMessage": "", "output": "", "error": "", "statuses": []}
    visible = execution.done
    view: dict[str, Any] = {
        "executionState": execution.state if visible else "Running",
        "executionMessage": execution.message if visible else "Execution in progress",
        "exitCode": execution.exit_code if visible else None,
        "output": execution.output if visible else "",
        "error": execution.error if visible else "",
        "startTime": iso(execution.start_time),
        "endTime": iso(execution.end_time) if visible and execution.end_time is not None else None,
        "statuses": [],
    }
    if visible and execution.state != "Succeeded":
        view["statuses"] = [{"code": f"ProvisioningState/{execution.state.lower()}", "level": "Error",
                             "displayStatus": f"Provisioning {execution.state.lower()}",
                             "message": execution.message, "time": view["endTime"]}]
    return view


def action_result(execution: Execution) -> dict[str, Any]:
    """RunCommandResult of an action run command (Linux: one status; Windows: StdOut and StdErr)."""
    out, err = execution.output, execution.error
    if execution.vm.os_type == "Windows":
        return {"value": [
            {"code": "ComponentStatus/StdOut/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded",
             "message": out},
            {"code": "ComponentStatus/StdErr/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded",
             "message": err},
        ]}
    if execution.state == "Succeeded":
        return {"value": [{"code": "ProvisioningState/succeeded", "level": "Info",
                           "displayStatus": "Provisioning succeeded",
                           "message": f"Enable succeeded: \n[stdout]\n{out}\n[stderr]\n{err}\n"}]}
    reason = (f"command terminated with exit status={execution.exit_code}" if execution.exit_code is not None
              else execution.message)
    return {"value": [{"code": "ProvisioningState/failed", "level": "Error", "displayStatus": "Provisioning failed",
                       "message": f"Enable failed: failed to execute command: {reason}\n[stdout]\n{out}\n"
                                  f"[stderr]\n{err}\n"}]}


def managed_json(command: ManagedCommand, *, with_view: bool) -> dict[str, Any]:
    props = {k: v for k, v in command.properties.items() if k in _ECHOED}
    props["provisioningState"] = command.provisioning_state
    if with_view:
        props["instanceView"] = instance_view(command.execution)
    body: dict[str, Any] = {"name": command.name, "id": command.resource_id, "type": RC_TYPE,
                            "location": command.location, "properties": props}
    if command.tags:
        body["tags"] = command.tags
    return body


# ------------------------------------------------------------------------ validation
def _bad(message: str, target: str | None = None) -> Exception:
    details = [{"code": "InvalidParameter", "target": target, "message": message}] if target else None
    return arm_fail(400, "InvalidParameter", message, details=details)


def _parameters(value: Any, target: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(f"'{target}' must be an array of {{name, value}} objects.", target)
    out: list[dict[str, str]] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("value", ""), str) \
                or not isinstance(item.get("name", ""), str):
            raise _bad(f"'{target}[{index}]' must be an object with string 'name' and 'value'.", f"{target}[{index}]")
        out.append({"name": item.get("name", ""), "value": item.get("value", "")})
    return out


def _split(parameters: list[dict[str, str]]) -> tuple[dict[str, str], list[str]]:
    """Named parameters -> environment; unnamed -> positional arguments (Linux semantics)."""
    named = {p["name"]: p["value"] for p in parameters if p["name"]}
    return named, [p["value"] for p in parameters if not p["name"]]


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad("'timeoutInSeconds' must be a non-negative integer.", "properties.timeoutInSeconds")
    return float(value) or None


def _source(props: dict[str, Any]) -> tuple[str | None, str | None]:
    source = props.get("source")
    if not isinstance(source, dict):
        raise _bad("'properties.source' is required: give 'script' or 'scriptUri'.", "properties.source")
    script, uri, command_id = source.get("script"), source.get("scriptUri"), source.get("commandId")
    given = [k for k, v in (("script", script), ("scriptUri", uri), ("commandId", command_id)) if v]
    if len(given) != 1:
        raise _bad("Exactly one of source.script, source.scriptUri or source.commandId must be given.",
                   "properties.source")
    if command_id:
        raise _bad(f"source.commandId '{command_id}' is not supported by the twin; send source.script or "
                   "source.scriptUri.", "properties.source.commandId")
    if script is not None and not isinstance(script, str):
        raise _bad("source.script must be a string.", "properties.source.script")
    if uri is not None and not isinstance(uri, str):
        raise _bad("source.scriptUri must be a string.", "properties.source.scriptUri")
    return script, uri


def _bool(props: dict[str, Any], name: str, default: bool) -> bool:
    value = props.get(name, default)
    if not isinstance(value, bool):
        raise _bad(f"'{name}' must be a boolean.", f"properties.{name}")
    return value


# ------------------------------------------------------------------------------ API
class RunCommandApi:
    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self.executor = executor_for(twin)

    def _vm(self, request: Request) -> SimVm:
        p = request.path_params
        require_subscription(self.twin, p["sub"])
        vm = self.twin.find_vm(vm_resource_id(self.twin.config.subscription_id, p["rg"], p["vm"]))
        if vm is None:
            raise arm_fail(404, "ResourceNotFound", f"The Resource '{_VM}/{p['vm']}' under resource group "
                           f"'{p['rg']}' was not found. For more details please go to "
                           "https://aka.ms/ARMResourceNotFoundFix")
        return vm

    def _scope(self, request: Request, suffix: str = "") -> str:
        p = request.path_params
        return vm_resource_id(self.twin.config.subscription_id, p["rg"], p["vm"]) + suffix

    def _ready(self, vm: SimVm) -> None:
        if self.twin.faults.active("runcommand_conflict", service="arm", vm=vm.resource_id) is not None \
                or self.executor.busy(vm) is not None:
            raise arm_fail(409, "Conflict", CONFLICT)
        if vm.power_state != "running" or vm.provisioning_state not in ("Succeeded", "Updating"):
            raise arm_fail(409, "OperationNotAllowed", f"Cannot run a command on the VM '{vm.name}': it is "
                           f"{vm.power_state} and its provisioning state is {vm.provisioning_state}.")

    # -------------------------------------------------------------- action run command
    async def action(self, request: Request) -> Response:
        twin = self.twin
        api_version = require_api_version(request)
        caller = twin.arm_call(request, ACTION, self._scope(request))
        vm = self._vm(request)
        body = await read_json(request, lambda m: arm_fail(400, "InvalidRequestContent", m))
        if not isinstance(body, dict):
            raise arm_fail(400, "InvalidRequestContent", "The request body must be a JSON object.")
        command_id = body.get("commandId")
        if command_id not in SHELLS.values():
            raise arm_fail(404, "NotFound", "The entity was not found in this Azure location.")
        if command_id != SHELLS[vm.os_type]:
            raise _bad(f"The command '{command_id}' cannot run on a {vm.os_type} VM.", "commandId")
        lines = body.get("script") or []
        if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
            raise _bad("'script' must be an array of strings.", "script")
        named, args = _split(_parameters(body.get("parameters"), "parameters"))
        self._ready(vm)
        op = twin.operations.start(vm.resource_id, location=vm.location, kind="runCommand")

        def finished(execution: Execution) -> None:
            if execution.state == "Failed" and twin.find_vm(vm.resource_id) is None:
                twin.operations.finish(op, "Failed", error={
                    "code": "OperationPreempted", "message": execution.message})
            elif execution.state == "TimedOut":
                twin.operations.finish(op, "Failed", error={
                    "code": "VMExtensionHandlerNonTransientError", "message": execution.message})
            else:
                result = action_result(execution)
                _record(twin, "action", vm, None, result)
                twin.operations.finish(op, "Succeeded", result=result)
            self.executor.discard(execution)

        try:
            self.executor.start(vm, script="\n".join(lines) + "\n", args=args, params=named,
                                timeout=self.executor.settings.default_timeout_seconds, on_finished=finished)
        except VmBusyError:
            twin.operations.finish(op, "Canceled")
            raise arm_fail(409, "Conflict", CONFLICT) from None
        twin.events.arm_event(request, "Microsoft.Resources.ResourceActionSuccess", vm.resource_id, ACTION, caller)
        return Response(status_code=202, headers=twin.operations.headers(op, api_version))

    # ------------------------------------------------------------ managed run commands
    def _missing(self, request: Request) -> Exception:
        p = request.path_params
        return arm_fail(404, "ResourceNotFound", f"The Resource '{RC_TYPE}/{p['vm']}/{p['name']}' under resource "
                        f"group '{p['rg']}' was not found. For more details please go to "
                        "https://aka.ms/ARMResourceNotFoundFix")

    def _begin(self, request: Request, action: str) -> tuple[str, str, Principal, SimVm]:
        """api-version, command name, authorised caller and VM of a managed run-command request."""
        api_version = require_api_version(request)
        name = request.path_params["name"]
        caller = self.twin.arm_call(request, action, self._scope(request, f"/runCommands/{name}"))
        return api_version, name, caller, self._vm(request)

    async def put(self, request: Request) -> Response:
        twin = self.twin
        api_version, name, caller, vm = self._begin(request, WRITE)
        body = await read_json(request, lambda m: arm_fail(400, "InvalidRequestContent", m))
        if not isinstance(body, dict):
            raise arm_fail(400, "InvalidRequestContent", "The request body must be a JSON object.")
        location = body.get("location")
        if not isinstance(location, str) or not location:
            raise arm_fail(400, "LocationRequired", "The location property is required for this definition.")
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise arm_fail(400, "InvalidRequestContent", "'properties' must be an object.")
        script, uri = _source(props)
        parameters = _parameters(props.get("parameters"), "properties.parameters")
        protected = _parameters(props.get("protectedParameters"), "properties.protectedParameters")
        timeout = _timeout(props.get("timeoutInSeconds"))
        run_async = _bool(props, "asyncExecution", False)
        strict = _bool(props, "treatFailureAsDeploymentFailure", False)
        tags = body.get("tags") or {}
        if not isinstance(tags, dict):
            raise _bad("Tags must be an object of string values.", "tags")
        existing = managed_command(self.twin, vm, name)
        self._ready(vm)
        named, args = _split(parameters + protected)
        echoed = {k: v for k, v in props.items() if k in _ECHOED}
        command = ManagedCommand(name=existing.name if existing else name, vm=vm, location=location,
                                 properties=echoed, tags={str(k): str(v) for k, v in tags.items()},
                                 provisioning_state="Updating" if existing else "Creating")
        op = twin.operations.start(command.resource_id, location=vm.location, kind="runCommands")

        def started(_: Execution) -> None:
            if run_async:
                command.provisioning_state = "Succeeded"
                twin.operations.finish(op)

        def finished(execution: Execution) -> None:
            failed = execution.state != "Succeeded" and strict
            command.provisioning_state = "Failed" if failed else "Succeeded"
            if failed:
                twin.operations.finish(op, "Failed", error={
                    "code": "VMExtensionProvisioningError",
                    "message": f"VM has reported a failure when processing extension '{command.name}': "
                               f"{execution.message}"})
            else:
                twin.operations.finish(op)

        try:
            command.execution = self.executor.start(vm, script=script, script_uri=uri, args=args, params=named,
                                                    timeout=timeout, on_started=started, on_finished=finished)
        except VmBusyError:
            twin.operations.finish(op, "Canceled")
            raise arm_fail(409, "Conflict", CONFLICT) from None
        state = _state(twin)
        with state.lock:
            state.managed[(vm.key, name.lower())] = command
        if existing is not None and existing.execution is not None:
            self.executor.discard(existing.execution)
        twin.events.arm_event(request, "Microsoft.Resources.ResourceWriteSuccess", command.resource_id, WRITE,
                              caller, created=existing is None)
        return JSONResponse(managed_json(command, with_view=False),
                            status_code=200 if existing else 201, headers=twin.operations.headers(op, api_version))

    def _shown(self, command: ManagedCommand, request: Request) -> dict[str, Any]:
        expand = (request.query_params.get("$expand") or "").lower()
        if expand and expand != "instanceview":
            raise _bad(f"The value '{expand}' of $expand is not valid: instanceView.", "$expand")
        body = managed_json(command, with_view=bool(expand))
        if expand:
            _record(self.twin, "instanceView", command.vm, command.name, body["properties"]["instanceView"])
        return body

    async def get(self, request: Request) -> Response:
        _, name, _, vm = self._begin(request, READ)
        command = managed_command(self.twin, vm, name)
        if command is None:
            raise self._missing(request)
        return JSONResponse(self._shown(command, request))

    async def list_commands(self, request: Request) -> Response:
        require_api_version(request)
        self.twin.arm_call(request, READ, self._scope(request))
        vm = self._vm(request)
        state = _state(self.twin)
        with state.lock:
            commands = sorted((c for (key, _), c in state.managed.items() if key == vm.key), key=lambda c: c.name)
        return JSONResponse({"value": [self._shown(c, request) for c in commands]})

    async def delete(self, request: Request) -> Response:
        twin = self.twin
        api_version, name, caller, vm = self._begin(request, DELETE)
        state = _state(twin)
        with state.lock:
            command = state.managed.pop((vm.key, name.lower()), None)
        if command is None:
            return Response(status_code=204)
        if command.execution is not None:
            if not command.execution.done:
                self.executor.cancel(command.execution)
            self.executor.discard(command.execution)
        op = twin.operations.start(command.resource_id, location=vm.location, kind="runCommands-delete")
        twin.operations.finish(op)
        twin.events.arm_event(request, "Microsoft.Resources.ResourceDeleteSuccess", command.resource_id, DELETE,
                              caller)
        return Response(status_code=202, headers=twin.operations.headers(op, api_version))

    def routes(self) -> list[BaseRoute]:
        vm = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{vm}"
        return [
            ci_route(f"{vm}/runCommand", self.action, ["POST"]),
            ci_route(f"{vm}/runCommands", self.list_commands, ["GET"]),
            ci_route(f"{vm}/runCommands/{{name}}", self.put, ["PUT"]),
            ci_route(f"{vm}/runCommands/{{name}}", self.get, ["GET"]),
            ci_route(f"{vm}/runCommands/{{name}}", self.delete, ["DELETE"]),
        ]


def routes(twin: Twin) -> list[BaseRoute]:
    """Routes of the ARM listener (mounted before the generic compute routes)."""
    return RunCommandApi(twin).routes()

