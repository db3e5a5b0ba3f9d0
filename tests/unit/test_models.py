"""Contracts: typed resource ids and JSON round-trips of every record Durable history stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from skr.models import (
    AssignmentRef,
    CustomStatus,
    FailureCode,
    KeyRef,
    KeyResourceId,
    OffboardingRequest,
    OffboardingResult,
    OnboardingRequest,
    OnboardingResult,
    Outcome,
    ReleaseOutcome,
    ReleaseReport,
    ResourceIdError,
    RoleAssignmentId,
    RoleDefinitionId,
    RoleRef,
    ScopeId,
    SkipReason,
    Stage,
    VaultResourceId,
    VmFacts,
    VmResourceId,
)

SUB = "0f0e0d0c-0b0a-4909-8807-060504030201"
VM = f"/subscriptions/{SUB}/resourceGroups/rg-cvm/providers/Microsoft.Compute/virtualMachines/cvm-01"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/skr-vault"
RELEASE_ROLE = "/providers/Microsoft.Authorization/roleDefinitions/08bbd89e-9f13-488c-ac41-acfcb10c90ab"


def test_vm_id_parses_and_keeps_a_canonical_form() -> None:
    vm = VmResourceId.parse(
        VM.replace("resourceGroups", "resourcegroups").replace("Microsoft.Compute", "microsoft.compute")
    )
    assert (vm.subscription_id, vm.resource_group, vm.name) == (SUB, "rg-cvm", "cvm-01")
    assert str(vm) == VM


def test_vm_id_equality_and_hash_ignore_case() -> None:
    lower, upper = (
        VmResourceId.parse(VM.lower()),
        VmResourceId.parse(VM.upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")),
    )
    assert lower == upper
    assert len({lower, upper}) == 1
    assert lower != VmResourceId.parse(VM.replace("cvm-01", "cvm-02"))


def test_ids_of_different_kinds_never_compare_equal() -> None:
    scope = ScopeId.parse(f"/subscriptions/{SUB}")
    vault = VaultResourceId.parse(VAULT)
    assert scope != vault
    assert (vault == VAULT) is False


@pytest.mark.parametrize(
    ("bad", "names"),
    [
        ("subscriptions/x", "must start with '/'"),
        (
            f"/subscription/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a",
            "segment 1 should be 'subscriptions'",
        ),
        (
            "/subscriptions/not-a-guid/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a",
            "invalid subscription id 'not-a-guid'",
        ),
        (
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/virtualMachines/a",
            "segment 6 should be 'Microsoft.Compute'",
        ),
        (
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachine/a",
            "segment 7 should be 'virtualMachines'",
        ),
        (f"/subscriptions/{SUB}/resourceGroups/rg", "truncated"),
        (
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a/extensions/x",
            "exactly 8 segments",
        ),
        (
            f"/subscriptions/{SUB}/resourceGroups/bad rg/providers/Microsoft.Compute/virtualMachines/a",
            "invalid resource group name 'bad rg'",
        ),
        (
            f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/bad name",
            "invalid VM name 'bad name'",
        ),
        (f"/subscriptions/{SUB}//resourceGroups/rg", "empty segment"),
    ],
)
def test_malformed_vm_ids_name_the_bad_segment(bad: str, names: str) -> None:
    with pytest.raises(ResourceIdError, match=names.replace("(", r"\(").replace(")", r"\)")):
        VmResourceId.parse(bad)


def test_model_fields_reject_malformed_ids_with_the_segment_in_the_error() -> None:
    with pytest.raises(ValidationError, match="invalid VM name"):
        OnboardingRequest.model_validate({"vm_id": VM.replace("cvm-01", "cvm 01")})


def test_scope_contains_only_its_resources() -> None:
    vm = VmResourceId.parse(VM)
    assert ScopeId.parse(f"/subscriptions/{SUB}").contains(vm)
    assert ScopeId.parse(f"/subscriptions/{SUB}/resourceGroups/RG-CVM").contains(vm)
    assert not ScopeId.parse(f"/subscriptions/{SUB}/resourceGroups/rg-other").contains(vm)
    assert not ScopeId.parse("/subscriptions/11111111-1111-1111-1111-111111111111").contains(vm)
    with pytest.raises(ResourceIdError, match="must be /subscriptions"):
        ScopeId.parse(f"/subscriptions/{SUB}/resourceGroups/rg/providers/x")


def test_key_id_is_the_vault_id_plus_key_name() -> None:
    key = VaultResourceId.parse(VAULT).key("cvm-01")
    assert str(key) == f"{VAULT}/keys/cvm-01"
    assert KeyResourceId.parse(str(key).upper().replace("/SUBSCRIPTIONS/", "/subscriptions/")) == key
    with pytest.raises(ResourceIdError, match="invalid key name"):
        KeyResourceId.parse(f"{VAULT}/keys/bad_name")
    with pytest.raises(ResourceIdError, match="invalid vault name"):
        VaultResourceId.parse(VAULT.replace("skr-vault", "x"))


def test_role_ids_keep_their_scope() -> None:
    builtin = RoleDefinitionId.parse(
        RELEASE_ROLE.upper().replace(
            "/PROVIDERS/MICROSOFT.AUTHORIZATION/ROLEDEFINITIONS/", "/providers/Microsoft.Authorization/roleDefinitions/"
        )
    )
    assert builtin.scope == "/" and builtin.guid == "08bbd89e-9f13-488c-ac41-acfcb10c90ab"
    assert str(builtin) == RELEASE_ROLE
    at_sub = RoleDefinitionId.at_subscription(SUB, builtin.guid)
    assert at_sub != builtin and at_sub.same_role(builtin)
    scope = f"{VAULT}/keys/cvm-01"
    assignment = RoleAssignmentId.parse(f"{scope}/providers/Microsoft.Authorization/roleAssignments/{SUB.upper()}")
    assert assignment.scope == scope and assignment.guid == SUB
    with pytest.raises(ResourceIdError, match="roleAssignments"):
        RoleAssignmentId.parse(RELEASE_ROLE)
    with pytest.raises(ResourceIdError, match="unexpected segments"):
        RoleAssignmentId.parse(f"{scope}/providers/Microsoft.Authorization/roleAssignments/{SUB}/x")


def _full_result() -> OnboardingResult:
    vm = VmResourceId.parse(VM)
    key_scope = VaultResourceId.parse(VAULT).key("cvm-01")
    role = RoleDefinitionId.parse(RELEASE_ROLE)
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    return OnboardingResult(
        vm_id=vm,
        outcome=Outcome.RELEASED,
        unique_vm_id="8d1d2b6c-0000-4000-8000-000000000001",
        principal_id="5e1f0c1a-0000-4000-8000-000000000002",
        key=KeyRef(
            vault_url="https://skr-vault.vault.azure.net/", name="cvm-01", version="a" * 32, resource_id=key_scope
        ),
        role=RoleRef(role_definition_id=role, role_name="Key Vault Crypto Service Release User"),
        assignment=AssignmentRef(
            assignment_id=RoleAssignmentId.parse(
                f"{key_scope}/providers/Microsoft.Authorization/roleAssignments/{SUB}"
            ),
            scope=str(key_scope),
            principal_id="5e1f0c1a-0000-4000-8000-000000000002",
            role_definition_id=role,
            created=True,
            created_on=now,
        ),
        stage_times={Stage.INSPECTING_VM: now, Stage.RELEASING: now},
        started_at=now,
        finished_at=now,
        propagation_seconds=31.5,
        release_attempts=2,
        report=ReleaseReport(
            outcome=ReleaseOutcome.RELEASED,
            key_id="https://skr-vault.vault.azure.net/keys/cvm-01/" + "a" * 32,
            attempts=3,
        ),
    )


def test_every_record_round_trips_through_json() -> None:
    vm = VmResourceId.parse(VM)
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    records = [
        OnboardingRequest(vm_id=vm, key_name="shared-key"),
        VmFacts(vm_id=vm, security_type="ConfidentialVM", principal_id="p", tags={"skr-key": "k"}),
        CustomStatus(stage=Stage.WAITING_FOR_RBAC, attempt=3, since=now, seconds_since_assignment=12.0),
        _full_result(),
        OnboardingResult(vm_id=vm, outcome=Outcome.SKIPPED, skip_reason=SkipReason.NOT_CONFIDENTIAL_VM),
        OffboardingRequest(vm_id=vm, assignment_ids=[_full_result().assignment.assignment_id]),  # type: ignore[union-attr]
        OffboardingResult(vm_id=vm, key_disabled=True),
    ]
    for record in records:
        wire = json.loads(json.dumps(record.to_json()))
        assert type(record).from_json(wire) == record


def test_records_reject_unknown_fields_and_inconsistent_outcomes() -> None:
    vm = VmResourceId.parse(VM)
    with pytest.raises(ValidationError, match="extra"):
        OnboardingRequest.model_validate({"vm_id": VM, "surprise": 1})
    with pytest.raises(ValidationError, match="failure_code"):
        OnboardingResult(vm_id=vm, outcome=Outcome.FAILED)
    with pytest.raises(ValidationError, match="skip_reason"):
        OnboardingResult(vm_id=vm, outcome=Outcome.SKIPPED)
    with pytest.raises(ValidationError, match="neither"):
        OnboardingResult(vm_id=vm, outcome=Outcome.RELEASED, failure_code=FailureCode.VM_DELETED)
    with pytest.raises(ValidationError, match="https"):
        KeyRef(vault_url="http://vault", name="k")
    with pytest.raises(ValidationError, match="invalid key name"):
        OnboardingRequest(vm_id=vm, key_name="no spaces allowed")


def test_release_report_tolerates_fields_added_by_newer_scripts() -> None:
    report = ReleaseReport.model_validate({"outcome": "forbidden_by_rbac", "attempts": 4, "future_field": True})
    assert report.outcome is ReleaseOutcome.FORBIDDEN_BY_RBAC
    assert "future_field" not in report.to_json()


def test_vm_facts_knows_a_confidential_vm() -> None:
    vm = VmResourceId.parse(VM)
    assert VmFacts(vm_id=vm, security_type="confidentialVM").is_confidential
    assert not VmFacts(vm_id=vm, security_type="TrustedLaunch").is_confidential
    assert not VmFacts(vm_id=vm).is_confidential


def test_key_ref_kid_with_and_without_version() -> None:
    key = KeyRef(vault_url="https://v.vault.azure.net", name="k")
    assert key.kid == "https://v.vault.azure.net/keys/k"
    assert key.model_copy(update={"version": "abc"}).kid == "https://v.vault.azure.net/keys/k/abc"


_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}[A-Za-z0-9]", fullmatch=True)


@given(rg=_names, name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,30}", fullmatch=True), flip=st.booleans())
def test_vm_ids_round_trip_and_compare_case_insensitively(rg: str, name: str, flip: bool) -> None:
    text = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
    parsed = VmResourceId.parse(text.swapcase() if flip else text)
    assert VmResourceId.parse(str(parsed)) == parsed
    assert str(parsed).lower() == text.lower()
