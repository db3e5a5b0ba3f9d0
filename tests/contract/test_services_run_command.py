"""ReleaseCommandService: the real in-VM script run by the twin's run commands, via azure-mgmt-compute.

Each test arranges a CVM, its key and (usually) its grant with the production services, starts the
command, polls it like the orchestrator would (here with short real sleeps), and checks the parsed
report - never the raw output - and that nothing secret left the VM.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError

from localdev.twin.core import Twin
from localdev.twin.model import SimVm, TeeProfile
from localdev.twin.runcommands import run_command_log
from localdev.twin.testing import compute_client
from skr.errors import Operation, SkrError, classify
from skr.models import FailureCode, KeyRef, ReleaseOutcome, VmFacts, VmResourceId
from skr.naming import run_command_name
from skr.services.keys import KeyService
from skr.services.rbac import RbacService
from skr.services.run_command import (
    LINUX_SCRIPT,
    WINDOWS_SCRIPT,
    CommandQuery,
    CommandStart,
    CommandState,
    CommandStatus,
    ReleaseCommandService,
)
from skr.services.vms import VmService
from skr.settings import RunCommandMode
from tests.contract._services_support import app_settings, factory_for, started_twin, unique

FAST = {"SKR_KEY_SIZE": "2048"}


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    with started_twin(run_command_duration_seconds=0.2) as started:
        yield started


def services(twin: Twin, **overrides: str | None) -> tuple[VmService, KeyService, RbacService, ReleaseCommandService]:
    settings = app_settings(twin, **{**FAST, **overrides})
    factory = factory_for(settings)
    return (
        VmService(factory),
        KeyService(factory, settings),
        RbacService(factory, settings),
        ReleaseCommandService(factory, settings),
    )


def onboarded(twin: Twin, *, grant: bool = True, **vm: object) -> tuple[VmFacts, KeyRef]:
    """A VM with its key and (when ``grant``) the release role, arranged by the production services."""
    created: SimVm = twin.create_vm(unique("cvm"), **vm)  # type: ignore[arg-type]
    vms, keys, rbac, _ = services(twin)
    facts = vms.inspect(VmResourceId.parse(created.resource_id))
    key = keys.ensure(keys.choose_name(facts)[0])
    if grant:
        assert facts.principal_id is not None
        rbac.assign(key, facts.principal_id, rbac.ensure_release_role())
    return facts, key


def wait(service: ReleaseCommandService, start: CommandStart, timeout: float = 60) -> CommandStatus:
    query = CommandQuery.model_validate(start.model_dump(mode="json"))  # what the orchestrator passes back
    deadline = time.monotonic() + timeout
    while True:
        status = service.status(query)
        if status.state.terminal:
            return status
        assert time.monotonic() < deadline, f"run command still {status.state} after {timeout}s"
        time.sleep(0.1)


def assert_no_secrets(twin: Twin, status: CommandStatus) -> None:
    text = status.model_dump_json()
    assert "eyJ" not in text
    for entry in run_command_log(twin):
        assert "eyJ" not in json.dumps(entry)


def test_managed_command_releases_and_reports(twin: Twin) -> None:
    facts, key = onboarded(twin)
    *_, commands = services(twin)
    start = commands.start(facts, key, attempt=1, retry_window_seconds=5)
    assert start.mode is RunCommandMode.MANAGED and start.vm_id == facts.vm_id
    assert start.command_name == run_command_name(facts.vm_id, 1) and start.operation_url is None

    shown = compute_client(twin, twin.operator_principal.object_id).virtual_machine_run_commands.get_by_virtual_machine(
        facts.vm_id.resource_group, facts.vm_id.name, start.command_name
    )
    assert shown.async_execution is True
    assert shown.timeout_in_seconds == app_settings(twin).run_command_timeout_seconds
    assert shown.source is not None and shown.source.script == LINUX_SCRIPT.read_text(encoding="utf-8")
    parameters = {p.name: p.value for p in shown.parameters or []}
    assert parameters == {
        "SKR_VAULT_URL": key.vault_url,
        "SKR_KEY_NAME": key.name,
        "SKR_KEY_VERSION": key.version,
        "SKR_MAA_ENDPOINT": twin.urls.maa,
        "SKR_MODE": "rest",
        "SKR_RETRY_WINDOW_SECONDS": "5",
        "SKR_ENC": "CKM_RSA_AES_KEY_WRAP",
    }

    status = wait(commands, start)
    assert status.state is CommandState.SUCCEEDED and status.exit_code == 0
    assert status.report is not None and status.report.outcome is ReleaseOutcome.RELEASED
    assert status.report.key_id == key.kid
    assert status.report.key_thumbprint
    assert_no_secrets(twin, status)

    assert commands.delete(facts.vm_id, start.command_name) is True
    assert commands.delete(facts.vm_id, start.command_name) is False


def test_restarting_the_same_attempt_is_idempotent(twin: Twin) -> None:
    facts, key = onboarded(twin)
    *_, commands = services(twin)
    first = commands.start(facts, key, attempt=2, retry_window_seconds=5)
    wait(commands, first)
    again = commands.start(facts, key, attempt=2, retry_window_seconds=5)  # a replayed activity re-PUTs
    assert again.command_name == first.command_name
    status = wait(commands, again)
    assert status.report is not None and status.report.outcome is ReleaseOutcome.RELEASED
    commands.delete(facts.vm_id, first.command_name)


def test_without_the_grant_the_report_says_forbidden_by_rbac(twin: Twin) -> None:
    facts, key = onboarded(twin, grant=False)
    *_, commands = services(twin)
    start = commands.start(facts, key, attempt=1, retry_window_seconds=0)
    status = wait(commands, start)
    assert status.state is CommandState.FAILED and status.exit_code == 2
    assert status.report is not None and status.report.outcome is ReleaseOutcome.FORBIDDEN_BY_RBAC
    assert status.report.error_code == "ForbiddenByRbac" and status.report.http_status == 403
    assert_no_secrets(twin, status)
    commands.delete(facts.vm_id, start.command_name)


def test_non_compliant_cvm_is_policy_denied(twin: Twin) -> None:
    facts, key = onboarded(twin, tee=TeeProfile.NONCOMPLIANT_CVM)
    *_, commands = services(twin)
    status = wait(commands, commands.start(facts, key, attempt=1, retry_window_seconds=0))
    assert status.exit_code == 3
    assert status.report is not None and status.report.outcome is ReleaseOutcome.POLICY_DENIED
    commands.delete(facts.vm_id, run_command_name(facts.vm_id, 1))


def test_a_second_command_on_a_busy_vm_is_a_retryable_conflict(twin: Twin) -> None:
    facts, key = onboarded(twin)
    *_, commands = services(twin)
    twin.faults.add("runcommand_hang", vm=facts.vm_id.name, count=1)
    first = commands.start(facts, key, attempt=1, retry_window_seconds=0)
    with pytest.raises(HttpResponseError) as caught:
        commands.start(facts, key, attempt=2, retry_window_seconds=0)
    error = classify(caught.value, Operation.RUN_COMMAND)
    assert error.code is FailureCode.RUN_COMMAND_CONFLICT and error.retryable and error.status == 409
    assert commands.status(CommandQuery.model_validate(first.model_dump())).state is CommandState.RUNNING
    assert commands.delete(facts.vm_id, first.command_name) is True  # deleting a running command stops it


def test_injected_conflict_fault(twin: Twin) -> None:
    facts, key = onboarded(twin)
    *_, commands = services(twin)
    twin.faults.add("runcommand_conflict", vm=facts.vm_id.name, count=1)
    with pytest.raises(HttpResponseError) as caught:
        commands.start(facts, key, attempt=1, retry_window_seconds=0)
    assert classify(caught.value, Operation.RUN_COMMAND).code is FailureCode.RUN_COMMAND_CONFLICT
    start = commands.start(facts, key, attempt=1, retry_window_seconds=0)  # the retry goes through
    assert wait(commands, start).report is not None
    commands.delete(facts.vm_id, start.command_name)


def test_timed_out_command(twin: Twin) -> None:
    facts, key = onboarded(twin)
    *_, commands = services(twin)
    twin.faults.add("runcommand_timeout", vm=facts.vm_id.name, count=1)
    start = commands.start(facts, key, attempt=1, retry_window_seconds=0)
    status = wait(commands, start)
    assert status.state is CommandState.TIMED_OUT
    commands.delete(facts.vm_id, start.command_name)


def test_a_vm_deleted_under_its_command_classifies_as_vm_deleted(twin: Twin) -> None:
    facts, key = onboarded(twin)
    *_, commands = services(twin)
    start = commands.start(facts, key, attempt=1, retry_window_seconds=0)
    twin.delete_vm(str(facts.vm_id))
    with pytest.raises(HttpResponseError) as caught:
        commands.status(CommandQuery.model_validate(start.model_dump()))
    assert classify(caught.value, Operation.RUN_COMMAND).code is FailureCode.VM_DELETED


def test_a_command_deleted_meanwhile_is_reported_failed(twin: Twin) -> None:
    facts, key = onboarded(twin)
    *_, commands = services(twin)
    start = commands.start(facts, key, attempt=1, retry_window_seconds=0)
    wait(commands, start)
    commands.delete(facts.vm_id, start.command_name)
    status = commands.status(CommandQuery.model_validate(start.model_dump()))
    assert status.state is CommandState.FAILED and status.report is None
    assert status.detail is not None and "not found" in status.detail


def test_action_mode_releases_through_the_async_operation(twin: Twin) -> None:
    facts, key = onboarded(twin)
    *_, commands = services(twin, SKR_RUN_COMMAND_MODE="action")
    start = commands.start(facts, key, attempt=1, retry_window_seconds=5)
    assert start.mode is RunCommandMode.ACTION
    assert start.operation_url is not None and start.operation_url.startswith(twin.urls.arm)
    assert start.result_url is not None
    status = wait(commands, start)
    assert status.state is CommandState.SUCCEEDED and status.exit_code == 0
    assert status.report is not None and status.report.outcome is ReleaseOutcome.RELEASED
    assert status.report.key_id == key.kid
    assert_no_secrets(twin, status)


def test_action_mode_failure_and_conflict(twin: Twin) -> None:
    facts, key = onboarded(twin, grant=False)
    *_, commands = services(twin, SKR_RUN_COMMAND_MODE="action")
    start = commands.start(facts, key, attempt=1, retry_window_seconds=0)
    status = wait(commands, start)
    assert status.state is CommandState.FAILED and status.exit_code == 2  # mirrors the managed executionState
    assert status.report is not None and status.report.outcome is ReleaseOutcome.FORBIDDEN_BY_RBAC

    twin.faults.add("runcommand_hang", vm=facts.vm_id.name, count=1)
    commands.start(facts, key, attempt=2, retry_window_seconds=0)
    with pytest.raises(HttpResponseError) as caught:
        commands.start(facts, key, attempt=3, retry_window_seconds=0)
    assert classify(caught.value, Operation.RUN_COMMAND).code is FailureCode.RUN_COMMAND_CONFLICT


def test_operation_urls_off_the_arm_host_are_refused(twin: Twin) -> None:
    *_, commands = services(twin, SKR_RUN_COMMAND_MODE="action")
    query = CommandQuery(
        vm_id=VmResourceId.parse(twin.vm_resource_id("x")),
        command_name="skr-release-001-x",
        mode=RunCommandMode.ACTION,
        operation_url="https://attacker.example/operations/1",
    )
    with pytest.raises(SkrError) as caught:
        commands.status(query)
    assert caught.value.error.code is FailureCode.INVALID_REQUEST
    assert "attacker.example" in caught.value.error.message


def test_windows_vms_get_the_powershell_script(twin: Twin) -> None:
    facts, key = onboarded(twin, os_type="Windows")
    *_, commands = services(twin)
    start = commands.start(facts, key, attempt=1, retry_window_seconds=0)
    shown = compute_client(twin, twin.operator_principal.object_id).virtual_machine_run_commands.get_by_virtual_machine(
        facts.vm_id.resource_group, facts.vm_id.name, start.command_name
    )
    assert shown.source is not None and shown.source.script == WINDOWS_SCRIPT.read_text(encoding="utf-8")
    wait(commands, start)  # the twin cannot run PowerShell; only the command's shape matters here
    assert commands.delete(facts.vm_id, start.command_name) is True


def test_action_mode_reads_a_location_url_and_a_failed_operation(twin: Twin) -> None:
    facts, key = onboarded(twin)
    *_, commands = services(twin, SKR_RUN_COMMAND_MODE="action")
    start = commands.start(facts, key, attempt=1, retry_window_seconds=5)
    assert start.result_url is not None
    by_location = start.model_copy(update={"operation_url": start.result_url, "result_url": None})
    status = wait(commands, by_location)  # 202 while running, then the RunCommandResult itself
    assert status.report is not None and status.report.outcome is ReleaseOutcome.RELEASED

    twin.faults.add("runcommand_timeout", vm=facts.vm_id.name, count=1)
    timed_out = wait(commands, commands.start(facts, key, attempt=2, retry_window_seconds=0))
    assert timed_out.state is CommandState.FAILED and timed_out.report is None
    assert timed_out.detail is not None and timed_out.detail.startswith("VMExtensionHandlerNonTransientError")

    no_url = start.model_copy(update={"operation_url": None})
    assert wait(commands, no_url).detail == "action run command has no operation URL to read"


def test_a_script_missing_from_the_package_is_a_clear_failure(twin: Twin, monkeypatch: pytest.MonkeyPatch) -> None:
    import skr.services.run_command as module

    monkeypatch.setattr(module, "WINDOWS_SCRIPT", module.SCRIPTS_DIR / "windows" / "missing.ps1")
    with pytest.raises(SkrError) as caught:
        module.script_for("Windows")
    assert caught.value.error.code is FailureCode.RUN_COMMAND_FAILED
    assert "missing.ps1" in caught.value.error.message
    assert module.script_for("linux")[1] is False and module.script_for(None)[1] is False


@pytest.mark.parametrize(
    ("execution", "provisioning", "state"),
    [
        ("Unknown", "Succeeded", CommandState.PENDING),
        ("Pending", None, CommandState.PENDING),
        ("Running", "Succeeded", CommandState.RUNNING),
        ("Succeeded", "Succeeded", CommandState.SUCCEEDED),
        ("Failed", "Failed", CommandState.FAILED),
        ("TimedOut", "Succeeded", CommandState.TIMED_OUT),
        ("Canceled", "Succeeded", CommandState.CANCELED),
        (None, "Failed", CommandState.FAILED),
        (None, "Creating", CommandState.PENDING),
    ],
)
def test_managed_states(execution: str | None, provisioning: str | None, state: CommandState) -> None:
    from skr.services.run_command import _managed_state

    assert _managed_state(execution, provisioning) is state
