"""RbacService against the twin's Microsoft.Authorization with the real azure-mgmt-authorization client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError

from localdev.twin import roles
from localdev.twin.core import Twin
from localdev.twin.model import SimVm
from skr.errors import Operation, SkrError, classify
from skr.models import (
    FailureCode,
    KeyRef,
    OffboardingRequest,
    RoleAssignmentId,
    RoleDefinitionId,
    RoleRef,
    VaultResourceId,
    VmResourceId,
)
from skr.naming import role_assignment_name
from skr.services.rbac import BUILTIN_RELEASE_ROLE_NAME, RbacService, custom_role_guid
from skr.settings import RELEASE_DATA_ACTION
from tests.contract._services_support import app_settings, factory_for, started_twin, unique

ROLE_WRITE = "Microsoft.Authorization/roleDefinitions/write"


@pytest.fixture(scope="module")
def twin() -> Iterator[Twin]:
    with started_twin() as started:
        yield started


def service(twin: Twin, **overrides: str | None) -> RbacService:
    settings = app_settings(twin, **overrides)
    return RbacService(factory_for(settings), settings)


def key_ref(twin: Twin, name: str | None = None) -> KeyRef:
    vault = VaultResourceId.parse(twin.vault().resource_id)
    key_name = name or unique("cvm")
    return KeyRef(vault_url=twin.vault().url, name=key_name, version="0" * 32, resource_id=vault.key(key_name))


def builtin(twin: Twin) -> RoleRef:
    return service(twin).ensure_release_role()


def app_writes(twin: Twin, action: str) -> int:
    return twin.counters.get(caller=twin.app_principal.object_id, service="arm", operation=action)


# ---------------------------------------------------------------------------------- roles


def test_builtin_mode_names_the_release_user_role_without_any_call(twin: Twin) -> None:
    before = twin.counters.get(caller=twin.app_principal.object_id)
    role = builtin(twin)
    assert role.role_definition_id.guid == roles.RELEASE_USER
    assert role.role_definition_id.scope == f"/subscriptions/{twin.config.subscription_id}"
    assert role.role_name == BUILTIN_RELEASE_ROLE_NAME and not role.custom
    assert twin.counters.get(caller=twin.app_principal.object_id) == before


def test_custom_mode_creates_a_release_only_role_assignable_at_the_vault(twin: Twin) -> None:
    name = unique("SKR Release")
    rbac = service(twin, SKR_ROLE_MODE="custom", SKR_CUSTOM_ROLE_NAME=name)
    role = rbac.ensure_release_role()
    guid = custom_role_guid(twin.config.subscription_id, name)
    assert role.custom and role.role_name == name and role.role_definition_id.guid == guid
    stored = twin.rbac.definitions[guid]
    assert stored.role_type == "CustomRole"
    assert stored.permissions == [
        {"actions": [], "notActions": [], "dataActions": [RELEASE_DATA_ACTION], "notDataActions": []}
    ]
    assert stored.assignable_scopes == [twin.vault().resource_id]

    writes = app_writes(twin, ROLE_WRITE)
    assert rbac.ensure_release_role() == role  # the second call only reads
    assert app_writes(twin, ROLE_WRITE) == writes


def test_custom_role_drifted_to_more_rights_is_repaired(twin: Twin) -> None:
    name = unique("SKR Release")
    rbac = service(twin, SKR_ROLE_MODE="custom", SKR_CUSTOM_ROLE_NAME=name)
    role = rbac.ensure_release_role()
    stored = twin.rbac.definitions[role.role_definition_id.guid]
    stored.permissions = [
        {"actions": ["*"], "notActions": [], "dataActions": [RELEASE_DATA_ACTION], "notDataActions": []}
    ]
    assert rbac.ensure_release_role() == role
    assert twin.rbac.definitions[role.role_definition_id.guid].permissions[0]["actions"] == []


def _operator_role(twin: Twin, name: str, guid: str, data_actions: list[str], scope: str | None = None) -> None:
    """A same-named role made outside the app (different id), written straight into the twin's directory."""
    from localdev.twin.rbac import RoleDefinition

    twin.rbac.definitions[guid] = RoleDefinition(
        guid=guid,
        role_name=name,
        description="made by hand",
        role_type="CustomRole",
        permissions=[{"actions": [], "notActions": [], "dataActions": data_actions, "notDataActions": []}],
        assignable_scopes=[scope or f"/subscriptions/{twin.config.subscription_id}"],
        created_on="2024-01-01T00:00:00Z",
        updated_on="2024-01-01T00:00:00Z",
    )


def test_same_named_release_only_role_is_adopted(twin: Twin) -> None:
    name = unique("Hand Made Release")
    guid = "5a1d9f3e-0000-4000-8000-000000000001"
    _operator_role(twin, name, guid, [RELEASE_DATA_ACTION])
    role = service(twin, SKR_ROLE_MODE="custom", SKR_CUSTOM_ROLE_NAME=name).ensure_release_role()
    assert role.role_definition_id.guid == guid and role.custom


def test_same_named_role_with_other_rights_is_a_clear_conflict(twin: Twin) -> None:
    name = unique("Too Broad")
    _operator_role(twin, name, "5a1d9f3e-0000-4000-8000-000000000002", ["Microsoft.KeyVault/vaults/keys/*"])
    with pytest.raises(SkrError) as caught:
        service(twin, SKR_ROLE_MODE="custom", SKR_CUSTOM_ROLE_NAME=name).ensure_release_role()
    assert caught.value.error.code is FailureCode.CONFLICT
    assert "SKR_CUSTOM_ROLE_NAME" in caught.value.error.message


def test_same_named_role_not_assignable_at_the_vault_is_the_arm_conflict(twin: Twin) -> None:
    name = unique("Elsewhere")
    elsewhere = f"/subscriptions/{twin.config.subscription_id}/resourceGroups/other-rg"
    _operator_role(twin, name, "5a1d9f3e-0000-4000-8000-000000000003", [RELEASE_DATA_ACTION], elsewhere)
    with pytest.raises(HttpResponseError) as caught:
        service(twin, SKR_ROLE_MODE="custom", SKR_CUSTOM_ROLE_NAME=name).ensure_release_role()
    error = classify(caught.value, Operation.ROLE_DEFINITION)
    assert error.code is FailureCode.CONFLICT and error.azure_code == "RoleDefinitionWithSameNameExists"


def test_custom_mode_without_role_write_rights_is_not_authorized() -> None:
    with started_twin(app_may_write_role_definitions=False) as twin:
        with pytest.raises(HttpResponseError) as caught:
            service(twin, SKR_ROLE_MODE="custom", SKR_CUSTOM_ROLE_NAME="Release").ensure_release_role()
        error = classify(caught.value, Operation.ROLE_DEFINITION)
        assert error.code is FailureCode.NOT_AUTHORIZED and error.status == 403


# ---------------------------------------------------------------------------- assignments


def test_assign_creates_the_deterministic_key_scope_assignment(twin: Twin) -> None:
    vm = twin.create_vm(unique("cvm"))
    assert vm.principal_id is not None
    key = key_ref(twin)
    role = builtin(twin)
    ref = service(twin).assign(key, vm.principal_id, role)
    assert ref.created
    assert ref.scope.lower() == str(key.resource_id).lower()
    assert ref.assignment_id.guid == role_assignment_name(key.resource_id, role.role_definition_id, vm.principal_id)
    assert ref.principal_id == vm.principal_id
    assert ref.role_definition_id.same_role(role.role_definition_id)
    stored = twin.rbac.assignments[ref.assignment_id.guid]
    assert stored.principal_type == "ServicePrincipal"

    again = service(twin).assign(key, vm.principal_id, role)
    assert not again.created and again.assignment_id == ref.assignment_id


def test_role_assignment_exists_under_another_name_is_the_same_grant(twin: Twin) -> None:
    vm = twin.create_vm(unique("cvm"))
    assert vm.principal_id is not None
    key = key_ref(twin)
    existing = twin.grant(vm.principal_id, roles.RELEASE_USER, str(key.resource_id))
    ref = service(twin).assign(key, vm.principal_id, builtin(twin))
    assert not ref.created
    assert ref.assignment_id.guid == existing["name"]
    assert len([a for a in twin.rbac.assignments.values() if a.principal_id == vm.principal_id]) == 1


def test_principal_type_avoids_principal_not_found_for_a_fresh_identity() -> None:
    with started_twin(principal_replication_seconds=600) as twin:
        vm = twin.create_vm("fresh")
        assert vm.principal_id is not None
        assert service(twin).assign(key_ref(twin), vm.principal_id, builtin(twin)).created


def test_principal_not_found_is_retryable(twin: Twin) -> None:
    vm = twin.create_vm(unique("cvm"))
    assert vm.principal_id is not None
    fault = twin.faults.add("principal_not_found", principal_id=vm.principal_id, count=1)
    key = key_ref(twin)
    with pytest.raises(HttpResponseError) as caught:
        service(twin).assign(key, vm.principal_id, builtin(twin))
    error = classify(caught.value, Operation.ROLE_ASSIGNMENT_WRITE)
    assert error.code is FailureCode.PRINCIPAL_NOT_FOUND and error.retryable
    assert fault.hits == 1
    assert service(twin).assign(key, vm.principal_id, builtin(twin)).created  # replicated now


def test_assign_refuses_keys_outside_the_vault_and_bad_principals(twin: Twin) -> None:
    foreign_vault = VaultResourceId.parse(
        f"/subscriptions/{twin.config.subscription_id}/resourceGroups/x/providers/Microsoft.KeyVault/vaults/other-vault"
    )
    foreign = KeyRef(vault_url="https://other.vault.azure.net", name="k", resource_id=foreign_vault.key("k"))
    with pytest.raises(SkrError) as caught:
        service(twin).assign(foreign, "7a1c1f9e-7f4c-4f36-9d5e-6a3f1b2c3d4e", builtin(twin))
    assert caught.value.error.code is FailureCode.INVALID_REQUEST and "refusing" in caught.value.error.message
    with pytest.raises(SkrError) as caught:
        service(twin).assign(key_ref(twin), "not-a-guid", builtin(twin))
    assert caught.value.error.code is FailureCode.INVALID_REQUEST
    no_scope = KeyRef(vault_url=twin.vault().url, name="k")
    with pytest.raises(SkrError, match="no ARM resource id"):
        service(twin).assign(no_scope, "7a1c1f9e-7f4c-4f36-9d5e-6a3f1b2c3d4e", builtin(twin))


def test_our_identity_without_assignment_rights_is_not_authorized() -> None:
    with started_twin() as twin:
        app = twin.app_principal.object_id
        for assignment in list(twin.rbac.assignments.values()):
            if assignment.principal_id == app and assignment.role_guid == roles.RBAC_ADMIN:
                twin.rbac.remove_assignment(assignment.name, propagate=False)
        vm = twin.create_vm("denied")
        assert vm.principal_id is not None
        with pytest.raises(HttpResponseError) as caught:
            service(twin).assign(key_ref(twin), vm.principal_id, builtin(twin))
        error = classify(caught.value, Operation.ROLE_ASSIGNMENT_WRITE)
        assert error.code is FailureCode.NOT_AUTHORIZED and not error.retryable
        assert not any(a.principal_id == vm.principal_id for a in twin.rbac.assignments.values())


def test_get_reads_an_assignment_and_none_when_absent(twin: Twin) -> None:
    vm = twin.create_vm(unique("cvm"))
    assert vm.principal_id is not None
    ref = service(twin).assign(key_ref(twin), vm.principal_id, builtin(twin))
    read = service(twin).get_assignment(ref.assignment_id)
    assert read is not None and read.assignment_id == ref.assignment_id and not read.created
    missing = RoleAssignmentId.parse(
        f"{key_ref(twin).resource_id}/providers/Microsoft.Authorization/roleAssignments/"
        "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
    )
    assert service(twin).get_assignment(missing) is None


def _vm_with_grant(twin: Twin) -> tuple[SimVm, str]:
    vm = twin.create_vm(unique("cvm"))
    assert vm.principal_id is not None
    ref = service(twin).assign(key_ref(twin), vm.principal_id, builtin(twin))
    return vm, ref.assignment_id.guid


def test_list_release_assignments_filters_role_scope_and_principal(twin: Twin) -> None:
    vm, guid = _vm_with_grant(twin)
    assert vm.principal_id is not None
    # Noise: another role at a key scope, and the release role at the vault scope itself.
    twin.grant(vm.principal_id, roles.KV_READER, f"{twin.vault().resource_id}/keys/{unique('k')}")
    twin.grant(vm.principal_id, roles.RELEASE_USER, twin.vault().resource_id)
    mine = service(twin).list_release_assignments(vm.principal_id)
    assert [a.assignment_id.guid for a in mine] == [guid]
    everyone = service(twin).list_release_assignments()
    assert guid in {a.assignment_id.guid for a in everyone}
    assert all(a.scope.lower().startswith(f"{twin.vault().resource_id}/keys/".lower()) for a in everyone)


def test_delete_is_idempotent(twin: Twin) -> None:
    _, guid = _vm_with_grant(twin)
    assignment_id = RoleAssignmentId.parse(twin.rbac.assignments[guid].resource_id)
    assert service(twin).delete_assignment(assignment_id) is True
    assert service(twin).delete_assignment(assignment_id) is False
    assert guid not in twin.rbac.assignments


def test_remove_assignments_takes_recorded_ids_and_the_principals_grants(twin: Twin) -> None:
    vm, recorded = _vm_with_grant(twin)
    assert vm.principal_id is not None
    second_key = key_ref(twin)
    extra = service(twin).assign(second_key, vm.principal_id, builtin(twin)).assignment_id
    unrelated = twin.grant(vm.principal_id, roles.KV_READER, twin.vault().resource_id)
    gone = RoleAssignmentId.parse(
        f"{second_key.resource_id}/providers/Microsoft.Authorization/roleAssignments/"
        "3f2504e0-4f89-41d3-9a0c-0305e82c3302"
    )
    request = OffboardingRequest(
        vm_id=VmResourceId.parse(vm.resource_id),
        principal_id=vm.principal_id,
        assignment_ids=[
            RoleAssignmentId.parse(twin.rbac.assignments[recorded].resource_id),
            RoleAssignmentId.parse(unrelated["id"]),
            gone,
        ],
    )
    result = service(twin).remove_assignments(request)
    assert {a.guid for a in result.removed_assignments} == {recorded, extra.guid}
    assert result.already_absent == [gone]
    assert result.detail is not None and "left 1 assignment" in result.detail
    assert unrelated["name"] in twin.rbac.assignments  # never removes what is not a release grant
    assert not result.key_disabled

    again = service(twin).remove_assignments(request)
    assert again.removed_assignments == [] and len(again.already_absent) == 2


def test_role_ref_from_another_scope_is_the_same_builtin(twin: Twin) -> None:
    tenant_level = RoleRef(
        role_definition_id=RoleDefinitionId.parse(
            f"/providers/Microsoft.Authorization/roleDefinitions/{roles.RELEASE_USER}"
        ),
        role_name=BUILTIN_RELEASE_ROLE_NAME,
    )
    vm = twin.create_vm(unique("cvm"))
    assert vm.principal_id is not None
    key = key_ref(twin)
    first = service(twin).assign(key, vm.principal_id, builtin(twin))
    second = service(twin).assign(key, vm.principal_id, tenant_level)
    assert second.assignment_id == first.assignment_id and not second.created
