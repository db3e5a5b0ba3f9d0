"""The activities as the Durable host calls them: registered functions, JSON in, envelope JSON out.

One onboarding and offboarding is driven step by step through the activity contract
(team/ACTIVITIES.md), each value passed on exactly as an orchestrator would, against the twin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from localdev.twin.core import Twin
from localdev.twin.runcommands import run_command_log
from skr.activity_result import parse
from skr.models import (
    AssignmentRef,
    KeyRef,
    OffboardingRequest,
    OffboardingResult,
    OnboardingResult,
    Outcome,
    ReleaseOutcome,
    RoleRef,
    VmFacts,
)
from skr.services.run_command import CommandStart, CommandState, CommandStatus
from tests.contract._services_support import activity_env, app_functions, call_activity, started_twin, unique

EXPECTED = {
    "inspect_vm",
    "ensure_key",
    "ensure_release_role",
    "assign_release_role",
    "get_role_assignment",
    "start_release_command",
    "get_release_command",
    "delete_release_command",
    "publish_event",
    "remove_role_assignments",
    "disable_key",
    "list_cvms_in_scope",
    "list_release_assignments",
}


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    with started_twin(run_command_duration_seconds=0.2) as started:
        yield started


@pytest.fixture
def env(twin: Twin) -> Iterator[None]:
    with activity_env(twin, SKR_KEY_SIZE="2048", SKR_DISABLE_KEY_ON_OFFBOARD="true"):
        yield


def value(name: str, payload: Any, model: Any) -> Any:
    result = parse(call_activity(name, payload), model)
    assert result.ok, f"{name} failed: {result.error}"
    return result.value


def test_every_contract_activity_is_registered_on_the_app() -> None:
    functions = app_functions()
    assert set(functions) >= EXPECTED
    for name in EXPECTED:
        bindings = [b.get_dict_repr() for b in functions[name].get_bindings()]
        assert [b["type"] for b in bindings] == ["activityTrigger"], name


def test_onboard_then_offboard_through_the_activity_contract(
    twin: Twin, env: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    vm = twin.create_vm(unique("cvm"), tags={"team": "a"})

    facts: VmFacts = value("inspect_vm", {"vm_id": vm.resource_id}, VmFacts)
    assert facts.is_confidential and facts.principal_id == vm.principal_id

    key: KeyRef = value("ensure_key", {"vm": facts.to_json(), "key_name": None}, KeyRef)
    assert key.created and key.resource_id is not None

    role: RoleRef = value("ensure_release_role", {}, RoleRef)
    assignment: AssignmentRef = value(
        "assign_release_role",
        {"key": key.to_json(), "principal_id": facts.principal_id, "role": role.to_json()},
        AssignmentRef,
    )
    assert assignment.created
    readable = value("get_role_assignment", {"assignment_id": str(assignment.assignment_id)}, AssignmentRef | None)
    assert readable is not None and readable.assignment_id == assignment.assignment_id

    start_json = call_activity(
        "start_release_command",
        {"vm": facts.to_json(), "key": key.to_json(), "attempt": 1, "retry_window_seconds": 5},
    )
    handle: dict[str, Any] = parse(start_json, dict[str, Any]).unwrap()
    assert CommandStart.model_validate(handle).command_name.startswith("skr-release-001-")
    deadline = time.monotonic() + 60
    while True:
        status: CommandStatus = value("get_release_command", handle, CommandStatus)  # passed back unchanged
        if status.state.terminal:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert status.state is CommandState.SUCCEEDED
    assert status.report is not None and status.report.outcome is ReleaseOutcome.RELEASED
    assert status.report.key_id == key.kid
    assert value(
        "delete_release_command", {"vm_id": handle["vm_id"], "command_name": handle["command_name"]}, dict
    ) == {"deleted": True}

    listed = value("list_release_assignments", {}, dict[str, list[AssignmentRef]])
    assert assignment.assignment_id in {a.assignment_id for a in listed["assignments"]}
    cvms = value("list_cvms_in_scope", {}, dict[str, list[VmFacts]])
    assert facts.vm_id in {f.vm_id for f in cvms["vms"]}

    result = OnboardingResult(
        vm_id=facts.vm_id,
        outcome=Outcome.RELEASED,
        principal_id=facts.principal_id,
        key=key,
        role=role,
        assignment=assignment,
        report=status.report,
    )
    published = value(
        "publish_event",
        {"type": "SkrOrchestrator.Onboarding.Succeeded", "subject": str(facts.vm_id), "data": result.to_json()},
        dict,
    )
    assert published == {"published": True}
    [event] = [r["event"] for r in twin.events.published if r["event"]["subject"] == str(facts.vm_id)]
    assert event["data"] == result.to_json()
    assert event["source"] == "/skr-orchestrator/SkrOrchestrator"

    twin.delete_vm(vm.resource_id)
    request = OffboardingRequest(
        vm_id=facts.vm_id,
        principal_id=facts.principal_id,
        assignment_ids=[assignment.assignment_id],
        key=key,
        disable_key=True,
    )
    offboarded: OffboardingResult = value("remove_role_assignments", request.to_json(), OffboardingResult)
    assert offboarded.removed_assignments == [assignment.assignment_id]
    assert value("disable_key", {"key": key.to_json()}, dict) == {"disabled": True}
    assert value("get_role_assignment", {"assignment_id": str(assignment.assignment_id)}, AssignmentRef | None) is None
    again: OffboardingResult = value("remove_role_assignments", request.to_json(), OffboardingResult)
    assert again.removed_assignments == [] and again.already_absent == [assignment.assignment_id]

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "inspect_vm" in logged and "assign_release_role" in logged
    assert "eyJ" not in logged  # no token, JWS or key material in any log line
    for entry in run_command_log(twin):
        assert "eyJ" not in str(entry)
