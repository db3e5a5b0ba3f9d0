"""Activity error paths: expected Azure failures come back classified in the envelope; bad input raises."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from activities._common import ActivityInputError
from localdev.twin.core import Twin
from skr.activity_result import parse
from skr.models import FailureCode, KeyRef, RoleRef, VaultResourceId, VmFacts, VmResourceId
from tests.contract._services_support import (
    activity_env,
    call_activity,
    exportable_key,
    other_policy,
    started_twin,
    unique,
)


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    with started_twin(run_command_duration_seconds=0.2) as started:
        yield started


@pytest.fixture
def env(twin: Twin) -> Iterator[None]:
    with activity_env(twin, SKR_KEY_SIZE="2048"):
        yield


def error_of(name: str, payload: object) -> tuple[FailureCode, bool]:
    result = parse(call_activity(name, payload), dict)
    assert not result.ok and result.error is not None, f"{name} unexpectedly succeeded"
    return result.error.code, result.error.retryable


def test_missing_vm_is_vm_not_found(twin: Twin, env: None) -> None:
    assert error_of("inspect_vm", {"vm_id": twin.vm_resource_id(unique("ghost"))}) == (FailureCode.VM_NOT_FOUND, False)


def test_policy_mismatch_is_an_envelope_error(twin: Twin, env: None) -> None:
    name = unique("cvm")
    exportable_key(twin, name, other_policy(twin))
    vm = VmFacts(vm_id=VmResourceId.parse(twin.vm_resource_id("any")))
    assert error_of("ensure_key", {"vm": vm.to_json(), "key_name": name}) == (FailureCode.KEY_POLICY_MISMATCH, False)


def test_principal_not_found_is_retryable(twin: Twin, env: None) -> None:
    vm = twin.create_vm(unique("cvm"))
    assert vm.principal_id is not None
    twin.faults.add("principal_not_found", principal_id=vm.principal_id, count=1)
    vault = VaultResourceId.parse(twin.vault().resource_id)
    key = KeyRef(vault_url=twin.vault().url, name="k1", resource_id=vault.key("k1"))
    role = parse(call_activity("ensure_release_role", None), RoleRef).unwrap()
    payload = {"key": key.to_json(), "principal_id": vm.principal_id, "role": role.to_json()}
    assert error_of("assign_release_role", payload) == (FailureCode.PRINCIPAL_NOT_FOUND, True)


def test_run_command_conflict_is_retryable(twin: Twin, env: None) -> None:
    vm = twin.create_vm(unique("cvm"))
    twin.faults.add("runcommand_conflict", vm=vm.name, count=1)
    facts = VmFacts(vm_id=VmResourceId.parse(vm.resource_id), location=vm.location, os_type="Linux")
    key = KeyRef(vault_url=twin.vault().url, name="k1")
    payload = {"vm": facts.to_json(), "key": key.to_json(), "attempt": 1, "retry_window_seconds": 0}
    assert error_of("start_release_command", payload) == (FailureCode.RUN_COMMAND_CONFLICT, True)


def test_out_of_scope_vm_never_gets_a_command(twin: Twin) -> None:
    group = unique("rg")
    vm = twin.create_vm(unique("cvm"), resource_group=group)
    facts = VmFacts(vm_id=VmResourceId.parse(vm.resource_id), location=vm.location)
    key = KeyRef(vault_url=twin.vault().url, name="k1")
    scope = f"/subscriptions/{twin.config.subscription_id}/resourceGroups/some-other-rg"
    with activity_env(twin, SKR_SCOPES=scope):
        payload = {"vm": facts.to_json(), "key": key.to_json(), "attempt": 1, "retry_window_seconds": 0}
        assert error_of("start_release_command", payload) == (FailureCode.INVALID_REQUEST, False)
    with activity_env(twin, SKR_TAG_FILTER="onboard=yes"):
        assert error_of("start_release_command", payload) == (FailureCode.INVALID_REQUEST, False)


def test_unreadable_assignment_is_null_not_an_error(twin: Twin, env: None) -> None:
    missing = (
        f"{twin.vault().resource_id}/keys/k/providers/Microsoft.Authorization/roleAssignments/"
        "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    )
    assert call_activity("get_role_assignment", {"assignment_id": missing}) == {"ok": True, "value": None}


def test_no_topic_means_not_published(twin: Twin) -> None:
    vm_id = twin.vm_resource_id(unique("cvm"))
    data = {"vm_id": vm_id, "outcome": "skipped", "skip_reason": "not_confidential_vm"}
    with activity_env(twin, SKR_EVENTS_TOPIC_ENDPOINT=None):
        result = call_activity(
            "publish_event", {"type": "SkrOrchestrator.Onboarding.Skipped", "subject": vm_id, "data": data}
        )
    assert result == {"ok": True, "value": {"published": False}}


def test_shared_key_is_not_disabled(twin: Twin, env: None) -> None:
    key = KeyRef(vault_url=twin.vault().url, name=unique("fleet"), shared=True)
    assert call_activity("disable_key", {"key": key.to_json()}) == {"ok": True, "value": {"disabled": False}}


@pytest.mark.parametrize(
    ("name", "payload", "field"),
    [
        ("inspect_vm", {"vm_id": "/subscriptions/x"}, "vm_id"),
        ("inspect_vm", {"vm_id": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/r", "x": 1}, "x"),
        ("ensure_key", {"key_name": "a"}, "vm"),
        ("ensure_release_role", {"unexpected": True}, "unexpected"),
        ("start_release_command", {"vm": {}, "key": {}, "attempt": 0, "retry_window_seconds": 1}, "attempt"),
        ("get_release_command", {"command_name": "c"}, "vm_id"),
        ("delete_release_command", {"vm_id": "/bad", "command_name": "../etc"}, "command_name"),
        ("publish_event", {"type": "Other.Event", "subject": "/bad", "data": {}}, "type"),
        ("remove_role_assignments", {"vm_id": "/bad"}, "vm_id"),
        ("disable_key", {}, "key"),
    ],
)
def test_bad_input_raises_naming_the_field(twin: Twin, env: None, name: str, payload: object, field: str) -> None:
    with pytest.raises(ActivityInputError, match=rf"{name}: invalid input \(.*{field}"):
        call_activity(name, payload)
