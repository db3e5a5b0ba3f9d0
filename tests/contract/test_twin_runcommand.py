"""ARM run commands on the twin through the real ``azure-mgmt-compute`` client (LRO polling included)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.mgmt.compute.models import (
    RunCommandInput,
    RunCommandInputParameter,
    VirtualMachineRunCommand,
    VirtualMachineRunCommandScriptSource,
)

from localdev.clock import VirtualClock
from localdev.twin.core import Twin
from localdev.twin.model import SimVm
from localdev.twin.runcommands import managed_command, run_command_log
from localdev.twin.runexec import executor_for
from localdev.twin.testing import compute_client
from tests.contract._twin_skr_support import PY38, exportable_key, grant_release, new_vm

FAST = {"run_command_duration_seconds": 0.2}
LINUX_SCRIPT = Path(__file__).resolve().parents[2] / "vm_scripts" / "linux" / "skr_release.py"


def _params(**values: str) -> list[RunCommandInputParameter]:
    return [RunCommandInputParameter(name=name, value=value) for name, value in values.items()]


def _managed(vm: SimVm, script: str, **kwargs: Any) -> VirtualMachineRunCommand:
    return VirtualMachineRunCommand(location=vm.location, source=VirtualMachineRunCommandScriptSource(script=script),
                                    **kwargs)


def _put(twin: Twin, vm: SimVm, name: str, command: VirtualMachineRunCommand, **client: Any) -> Any:
    rc = compute_client(twin, **client).virtual_machine_run_commands
    return rc.begin_create_or_update(vm.resource_group, vm.name, name, command).result()


def _view(twin: Twin, vm: SimVm, name: str) -> Any:
    rc = compute_client(twin).virtual_machine_run_commands
    return rc.get_by_virtual_machine(vm.resource_group, vm.name, name, expand="instanceView")


def test_action_run_command_returns_the_linux_result(twin_factory: Callable[..., Twin]) -> None:
    twin = twin_factory(**FAST)
    vm = new_vm(twin)
    parameters = [*_params(GREETING="world"), RunCommandInputParameter(name="", value="positional")]
    poller = compute_client(twin).virtual_machines.begin_run_command(
        vm.resource_group, vm.name, RunCommandInput(command_id="RunShellScript", script=[
            "echo hello $GREETING $1", "echo oops >&2"], parameters=parameters))
    [status] = poller.result().value
    assert status.code == "ProvisioningState/succeeded" and status.level == "Info"
    assert status.display_status == "Provisioning succeeded"
    assert status.message == "Enable succeeded: \n[stdout]\nhello world positional\n\n[stderr]\noops\n\n"

    [failed] = compute_client(twin).virtual_machines.begin_run_command(
        vm.resource_group, vm.name, RunCommandInput(command_id="RunShellScript", script=["echo out", "exit 7"])
    ).result().value
    assert failed.code == "ProvisioningState/failed" and failed.level == "Error"
    assert failed.message.startswith("Enable failed: failed to execute command: command terminated with exit "
                                     "status=7\n[stdout]\nout\n")
    operations = [e["data"]["operationName"] for e in twin.events.emitted if e["subject"] == vm.resource_id]
    assert operations.count("Microsoft.Compute/virtualMachines/runCommand/action") == 2
    assert [entry["kind"] for entry in run_command_log(twin)] == ["action", "action"]


def test_managed_run_command_lifecycle(twin_factory: Callable[..., Twin]) -> None:
    twin = twin_factory(**FAST)
    vm = new_vm(twin)
    script = "#!/usr/bin/env python3\nimport os, sys\nprint('x' * 5000 + 'END', os.environ['VISIBLE'], sys.argv[1:])\n" \
             "print('to stderr', file=sys.stderr)\n"
    created = _put(twin, vm, "skr-release", _managed(vm, script, parameters=_params(VISIBLE="v"),
                                                      protected_parameters=_params(HIDDEN="p@ss"),
                                                      timeout_in_seconds=300))
    assert created.provisioning_state == "Succeeded"
    assert created.protected_parameters is None and created.parameters[0].name == "VISIBLE"
    view = _view(twin, vm, "skr-release")
    iv = view.instance_view
    assert iv.execution_state == "Succeeded" and iv.exit_code == 0
    assert len(iv.output.encode()) == 4096 and iv.output.endswith("END v []\n")
    assert iv.error == "to stderr\n"
    assert iv.start_time is not None and iv.end_time is not None and iv.end_time >= iv.start_time
    assert "p@ss" not in json.dumps(view.as_dict()) and "p@ss" not in json.dumps(run_command_log(twin))
    assert run_command_log(twin)[-1]["shown"]["output"] == iv.output
    listed = list(compute_client(twin).virtual_machine_run_commands.list_by_virtual_machine(vm.resource_group,
                                                                                             vm.name))
    assert [c.name for c in listed] == ["skr-release"]
    rc = compute_client(twin).virtual_machine_run_commands
    rc.begin_delete(vm.resource_group, vm.name, "skr-release").result()
    with pytest.raises(ResourceNotFoundError):
        _view(twin, vm, "skr-release")
    rc.begin_delete(vm.resource_group, vm.name, "skr-release").result()  # deleting again is fine
    ops = [(e["eventType"].rsplit(".", 1)[1], e["data"]["operationName"]) for e in twin.events.emitted
           if e["subject"].endswith("/runCommands/skr-release")]
    assert ops == [("ResourceWriteSuccess", "Microsoft.Compute/virtualMachines/runCommands/write"),
                   ("ResourceDeleteSuccess", "Microsoft.Compute/virtualMachines/runCommands/delete")]


def test_results_appear_after_the_realistic_duration(twin_factory: Callable[..., Twin],
                                                     virtual_clock: VirtualClock) -> None:
    twin = twin_factory(clock=virtual_clock)  # default duration: 20 s on the twin clock
    vm = new_vm(twin)
    _put(twin, vm, "quick", _managed(vm, "echo quick"))
    quick = _view(twin, vm, "quick").instance_view
    assert (quick.end_time - quick.start_time).total_seconds() == pytest.approx(20)
    _put(twin, vm, "slow", _managed(vm, "#!/usr/bin/env python3\nimport time\ntime.sleep(45)\nprint('slow')\n"))
    slow = _view(twin, vm, "slow").instance_view
    assert slow.output == "slow\n"
    assert (slow.end_time - slow.start_time).total_seconds() == pytest.approx(45)


def test_timeouts_hangs_and_timeout_faults_end_timed_out(twin_factory: Callable[..., Twin],
                                                         virtual_clock: VirtualClock) -> None:
    twin = twin_factory(clock=virtual_clock)
    vm = new_vm(twin)
    sleeper = "#!/usr/bin/env python3\nimport time\nprint('started', flush=True)\ntime.sleep(600)\n"
    _put(twin, vm, "sleeper", _managed(vm, sleeper, timeout_in_seconds=60))
    iv = _view(twin, vm, "sleeper").instance_view
    assert iv.execution_state == "TimedOut" and iv.output == "started\n"
    assert (iv.end_time - iv.start_time).total_seconds() == pytest.approx(60)

    twin.faults.add("runcommand_hang", count=1, vm=vm.name)
    _put(twin, vm, "hung", _managed(vm, "echo never", timeout_in_seconds=900))
    iv = _view(twin, vm, "hung").instance_view
    assert iv.execution_state == "TimedOut" and iv.output == ""
    assert (iv.end_time - iv.start_time).total_seconds() == pytest.approx(900)

    twin.faults.add("runcommand_timeout", count=1)
    _put(twin, vm, "faulted", _managed(vm, "echo hi"))
    assert _view(twin, vm, "faulted").instance_view.execution_state == "TimedOut"


def test_one_command_at_a_time_per_vm(twin_factory: Callable[..., Twin]) -> None:
    twin = twin_factory(run_command_duration_seconds=60)
    vm, other = new_vm(twin), new_vm(twin)
    started = _put(twin, vm, "first", _managed(vm, "echo first", async_execution=True))
    assert started.provisioning_state == "Succeeded"  # asyncExecution: provisioned once the script started
    assert _view(twin, vm, "first").instance_view.execution_state == "Running"
    with pytest.raises(ResourceExistsError) as caught:
        _put(twin, vm, "second", _managed(vm, "echo second"))
    assert caught.value.error.code == "Conflict"
    assert caught.value.error.message.startswith("Run command extension execution is in progress")
    with pytest.raises(ResourceExistsError):
        compute_client(twin).virtual_machines.begin_run_command(
            vm.resource_group, vm.name, RunCommandInput(command_id="RunShellScript", script=["echo"]))
    _put(twin, other, "elsewhere", _managed(other, "echo ok", async_execution=True))  # other VMs are free
    compute_client(twin).virtual_machine_run_commands.begin_delete(vm.resource_group, vm.name, "first").result()
    assert executor_for(twin).busy(vm) is None  # deleting a running command terminates it

    twin.faults.add("runcommand_conflict", count=1, vm=vm.resource_id)
    with pytest.raises(ResourceExistsError):
        _put(twin, vm, "third", _managed(vm, "echo third"))


def test_failing_script_with_treat_failure_as_deployment_failure(twin_factory: Callable[..., Twin]) -> None:
    twin = twin_factory(**FAST)
    vm = new_vm(twin)
    with pytest.raises(HttpResponseError) as caught:
        _put(twin, vm, "strict", _managed(vm, "echo bad >&2\nexit 3", treat_failure_as_deployment_failure=True))
    assert "VMExtensionProvisioningError" in str(caught.value)
    view = _view(twin, vm, "strict")
    assert view.provisioning_state == "Failed"
    assert (view.instance_view.execution_state, view.instance_view.exit_code) == ("Failed", 3)
    assert view.instance_view.error == "bad\n"
    lenient = _put(twin, vm, "lenient", _managed(vm, "exit 3"))
    assert lenient.provisioning_state == "Succeeded"
    assert _view(twin, vm, "lenient").instance_view.execution_state == "Failed"


def test_vm_deleted_during_the_run(twin_factory: Callable[..., Twin], virtual_clock: VirtualClock) -> None:
    twin = twin_factory(clock=virtual_clock)
    vm = new_vm(twin)
    twin.faults.add("vm_delete_during_run", vm=vm.resource_id, seconds=5)
    with pytest.raises(HttpResponseError) as caught:
        compute_client(twin).virtual_machines.begin_run_command(
            vm.resource_group, vm.name, RunCommandInput(command_id="RunShellScript", script=["sleep 1"])).result()
    assert "OperationPreempted" in str(caught.value)
    assert twin.find_vm(vm.resource_id) is None
    with pytest.raises(ResourceNotFoundError):
        _view(twin, vm, "anything")


def test_callers_need_run_command_permissions(twin: Twin) -> None:
    vm = new_vm(twin)
    nobody = twin.add_principal("nobody", replicated=True)
    with pytest.raises(HttpResponseError) as caught:
        _put(twin, vm, "x", _managed(vm, "echo"), principal_id=nobody.object_id)
    assert caught.value.status_code == 403 and caught.value.error.code == "AuthorizationFailed"
    assert "Microsoft.Compute/virtualMachines/runCommands/write" in caught.value.error.message
    with pytest.raises(HttpResponseError) as caught:
        compute_client(twin, principal_id=nobody.object_id).virtual_machines.begin_run_command(
            vm.resource_group, vm.name, RunCommandInput(command_id="RunShellScript", script=["echo"]))
    assert "Microsoft.Compute/virtualMachines/runCommand/action" in caught.value.error.message


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"properties": {"source": {"script": "echo"}}}, 400, "LocationRequired"),
        ({"location": "westeurope", "properties": {}}, 400, "InvalidParameter"),
        ({"location": "westeurope", "properties": {"source": {"commandId": "RunShellScript"}}}, 400,
         "InvalidParameter"),
        ({"location": "westeurope", "properties": {"source": {"script": "echo"}, "timeoutInSeconds": -1}}, 400,
         "InvalidParameter"),
        ({"location": "westeurope", "properties": {"source": {"script": "echo"}, "parameters": [{"name": 1}]}}, 400,
         "InvalidParameter"),
    ],
)
def test_invalid_managed_bodies(twin: Twin, body: dict[str, Any], status: int, code: str) -> None:
    vm = new_vm(twin)
    rc = compute_client(twin).virtual_machine_run_commands
    with pytest.raises(HttpResponseError) as caught:
        rc.begin_create_or_update(vm.resource_group, vm.name, "bad", body)
    assert (caught.value.status_code, caught.value.error.code) == (status, code)
    assert executor_for(twin).busy(vm) is None


def test_unknown_vm_and_command_id(twin: Twin) -> None:
    vm = new_vm(twin)
    client = compute_client(twin)
    with pytest.raises(ResourceNotFoundError):
        client.virtual_machines.begin_run_command(vm.resource_group, "missing",
                                                  RunCommandInput(command_id="RunShellScript", script=["echo"]))
    with pytest.raises(ResourceNotFoundError) as caught:
        client.virtual_machines.begin_run_command(vm.resource_group, vm.name, RunCommandInput(command_id="ifconfig"))
    assert caught.value.error.message == "The entity was not found in this Azure location."


def test_script_uri_and_a_python_38_guest(twin_factory: Callable[..., Twin], tmp_path: Path) -> None:
    twin = twin_factory(**FAST)
    executor_for(twin).settings.interpreter = PY38
    vm = new_vm(twin)
    script = tmp_path / "probe.py"
    script.write_text("#!/usr/bin/env python3\nimport sys\nprint('%d.%d' % sys.version_info[:2])\n")
    command = VirtualMachineRunCommand(location=vm.location,
                                       source=VirtualMachineRunCommandScriptSource(script_uri=script.as_uri()))
    _put(twin, vm, "probe", command)
    assert _view(twin, vm, "probe").instance_view.output == "3.8\n"


@pytest.mark.parametrize("python", [None, PY38])
def test_the_real_release_script_runs_as_a_managed_run_command(twin_factory: Callable[..., Twin],
                                                               virtual_clock: VirtualClock,
                                                               python: str | None) -> None:
    twin = twin_factory(clock=virtual_clock)
    if python:
        executor_for(twin).settings.interpreter = python
    vm = new_vm(twin)
    name = exportable_key(twin)
    grant_release(twin, vm, name)
    executor_for(twin).settings.keep_sandboxes = True
    params = _params(SKR_VAULT_URL=twin.vault().url, SKR_KEY_NAME=name, SKR_MAA_ENDPOINT=twin.urls.maa,
                     SKR_MODE="rest", SKR_RETRY_WINDOW_SECONDS="60", SKR_ENC="RSA_AES_KEY_WRAP_256")
    _put(twin, vm, "skr", _managed(vm, LINUX_SCRIPT.read_text(), parameters=params, timeout_in_seconds=600))
    iv = _view(twin, vm, "skr").instance_view
    lines = iv.output.splitlines()
    assert iv.execution_state == "Succeeded" and iv.exit_code == 0, iv.output + iv.error
    assert len(lines) == 1 and lines[0].startswith("SKR-RESULT ")
    result = json.loads(lines[0].removeprefix("SKR-RESULT "))
    assert result["outcome"] == "released"
    assert "eyJ" not in iv.output + iv.error
    command = managed_command(twin, vm, "skr")
    assert command is not None and command.execution is not None and command.execution.workdir is not None
    assert (command.execution.workdir / "keys" / "released.jws").exists()  # the key stays inside the VM
