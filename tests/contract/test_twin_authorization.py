"""ARM Authorization 2022-04-01 through the real azure-mgmt-authorization client."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from localdev.clock import VirtualClock
from localdev.twin import roles
from localdev.twin.core import Twin
from localdev.twin.testing import authorization_client

RELEASE_USER = roles.RELEASE_USER


def sub_scope(twin: Twin) -> str:
    return f"/subscriptions/{twin.config.subscription_id}"


def role_id(twin: Twin, guid: str) -> str:
    return f"{sub_scope(twin)}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def key_scope(twin: Twin, key: str = "k1") -> str:
    return f"{twin.vault().resource_id}/keys/{key}"


def assignment_body(twin: Twin, principal_id: str, guid: str = RELEASE_USER, **extra: str) -> dict[str, str]:
    return {"role_definition_id": role_id(twin, guid), "principal_id": principal_id, **extra}


@pytest.mark.parametrize(("guid", "name"), [
    (roles.RELEASE_USER, "Key Vault Crypto Service Release User"), (roles.OWNER, "Owner"),
    (roles.CONTRIBUTOR, "Contributor"), (roles.READER, "Reader"), (roles.USER_ACCESS_ADMIN, "User Access Administrator"),
    (roles.RBAC_ADMIN, "Role Based Access Control Administrator"), (roles.KV_CRYPTO_OFFICER, "Key Vault Crypto Officer"),
    (roles.KV_ADMIN, "Key Vault Administrator"), (roles.VM_CONTRIBUTOR, "Virtual Machine Contributor"),
    (roles.EVENTGRID_DATA_SENDER, "EventGrid Data Sender"),
])
def test_built_in_roles_have_their_real_ids(twin: Twin, guid: str, name: str) -> None:
    role = authorization_client(twin).role_definitions.get(sub_scope(twin), guid)
    assert role.role_name == name and role.role_type == "BuiltInRole" and role.assignable_scopes == ["/"]
    assert role.id == role_id(twin, guid)


def test_release_user_grants_only_the_release_data_action(twin: Twin) -> None:
    role = authorization_client(twin).role_definitions.get_by_id(
        f"/providers/Microsoft.Authorization/roleDefinitions/{RELEASE_USER}")
    assert role.permissions[0].data_actions == ["Microsoft.KeyVault/vaults/keys/release/action"]
    assert role.permissions[0].actions == []
    assert role.id == f"/providers/Microsoft.Authorization/roleDefinitions/{RELEASE_USER}"


def test_list_role_definitions_by_name_and_type(twin: Twin) -> None:
    client = authorization_client(twin)
    found = list(client.role_definitions.list(sub_scope(twin), filter="roleName eq 'Owner'"))
    assert [r.name for r in found] == [roles.OWNER]
    custom = list(client.role_definitions.list(sub_scope(twin), filter="type eq 'CustomRole'"))
    assert [r.role_name for r in custom] == ["SKR Orchestrator Operator"]
    every = list(client.role_definitions.list(sub_scope(twin)))
    assert len(every) == len(roles.BUILT_IN_ROLES) + 1


def test_custom_role_put_is_always_201_and_names_are_unique(twin: Twin) -> None:
    client = authorization_client(twin)
    guid = str(uuid.uuid4())
    body = {"role_name": "SKR Key Releaser", "description": "release only", "role_type": "CustomRole",
            "permissions": [{"data_actions": ["Microsoft.KeyVault/vaults/keys/release/action"]}],
            "assignable_scopes": [sub_scope(twin)]}
    created = client.role_definitions.create_or_update(sub_scope(twin), guid, body)
    assert created.role_name == "SKR Key Releaser" and created.role_type == "CustomRole"
    updated = client.role_definitions.create_or_update(sub_scope(twin), guid, {**body, "description": "v2"})
    assert updated.description == "v2"  # the SDK only accepts 201, so the update answered 201 too
    with pytest.raises(ResourceExistsError) as dup:
        client.role_definitions.create_or_update(sub_scope(twin), str(uuid.uuid4()), body)
    assert dup.value.error.code == "RoleDefinitionWithSameNameExists"
    with pytest.raises(ResourceExistsError):
        client.role_definitions.create_or_update(sub_scope(twin), str(uuid.uuid4()), {**body, "role_name": "owner"})
    with pytest.raises(HttpResponseError) as bad:
        client.role_definitions.create_or_update(sub_scope(twin), str(uuid.uuid4()),
                                                 {**body, "role_name": "x", "assignable_scopes": []})
    assert bad.value.error.code == "InvalidRequestContent"
    assert client.role_definitions.get(sub_scope(twin), guid).description == "v2"
    with pytest.raises(HttpResponseError) as app_delete:  # the app's role may create roles, not delete them
        client.role_definitions.delete(sub_scope(twin), guid)
    assert app_delete.value.error.code == "AuthorizationFailed"
    operator = authorization_client(twin, twin.operator_principal.object_id)
    assert operator.role_definitions.delete(sub_scope(twin), guid).name == guid
    assert operator.role_definitions.delete(sub_scope(twin), guid) is None  # 204
    with pytest.raises(ResourceNotFoundError) as gone:
        client.role_definitions.get(sub_scope(twin), guid)
    assert gone.value.error.code == "RoleDefinitionDoesNotExist"


def test_custom_role_in_use_and_built_ins_cannot_be_deleted(twin: Twin) -> None:
    client = authorization_client(twin, twin.operator_principal.object_id)
    guid = str(uuid.uuid4())
    client.role_definitions.create_or_update(sub_scope(twin), guid, {
        "role_name": "in use", "permissions": [{"actions": ["*/read"]}], "assignable_scopes": [sub_scope(twin)]})
    vm = twin.create_vm("holder")
    client.role_assignments.create(sub_scope(twin), str(uuid.uuid4()), assignment_body(twin, vm.principal_id, guid))
    with pytest.raises(ResourceExistsError) as busy:
        client.role_definitions.delete(sub_scope(twin), guid)
    assert busy.value.error.code == "RoleDefinitionHasAssignments"
    with pytest.raises(HttpResponseError) as builtin:
        client.role_definitions.delete(sub_scope(twin), roles.OWNER)
    assert builtin.value.status_code == 403


def test_app_may_not_create_roles_when_configured_without_that_right(twin_factory) -> None:
    twin = twin_factory(app_may_write_role_definitions=False)
    with pytest.raises(HttpResponseError) as denied:
        authorization_client(twin).role_definitions.create_or_update(sub_scope(twin), str(uuid.uuid4()), {
            "role_name": "r", "permissions": [{"actions": ["*/read"]}], "assignable_scopes": [sub_scope(twin)]})
    assert denied.value.status_code == 403 and denied.value.error.code == "AuthorizationFailed"


def test_assignment_create_repeat_duplicate_and_update(twin: Twin) -> None:
    client = authorization_client(twin)
    vm = twin.create_vm("cvm-1")
    name = str(uuid.uuid4())
    body = assignment_body(twin, vm.principal_id, principal_type="ServicePrincipal")
    created = client.role_assignments.create(key_scope(twin), name, body)
    assert created.name == name and created.principal_id == vm.principal_id
    assert created.scope == key_scope(twin) and created.role_definition_id == role_id(twin, RELEASE_USER)
    assert created.principal_type == "ServicePrincipal"
    assert created.created_by == twin.app_principal.object_id
    again = client.role_assignments.create(key_scope(twin), name, body)
    assert again.id == created.id
    with pytest.raises(ResourceExistsError) as dup:
        client.role_assignments.create(key_scope(twin), str(uuid.uuid4()), body)
    assert dup.value.error.code == "RoleAssignmentExists"
    assert name.replace("-", "") in dup.value.error.message
    with pytest.raises(HttpResponseError) as changed:
        client.role_assignments.create(key_scope(twin), name, assignment_body(twin, twin.app_principal.object_id))
    assert changed.value.status_code == 400 and changed.value.error.code == "RoleAssignmentUpdateNotPermitted"
    assert client.role_assignments.get(key_scope(twin), name).principal_id == vm.principal_id
    assert client.role_assignments.get_by_id(created.id).name == name


def test_assignment_validation_errors(twin: Twin) -> None:
    client = authorization_client(twin)
    vm = twin.create_vm("cvm-2")
    with pytest.raises(HttpResponseError) as bad_name:
        client.role_assignments.create(key_scope(twin), "not-a-guid", assignment_body(twin, vm.principal_id))
    assert bad_name.value.error.code == "InvalidRoleAssignmentId"
    with pytest.raises(ResourceNotFoundError) as bad_role:
        client.role_assignments.create(key_scope(twin), str(uuid.uuid4()),
                                       assignment_body(twin, vm.principal_id, str(uuid.uuid4())))
    assert bad_role.value.error.code == "RoleDefinitionDoesNotExist"
    with pytest.raises(HttpResponseError) as bad_principal:
        client.role_assignments.create(key_scope(twin), str(uuid.uuid4()), assignment_body(twin, "nobody"))
    assert bad_principal.value.error.code == "InvalidPrincipalId"
    with pytest.raises(HttpResponseError) as mismatch:
        client.role_assignments.create(key_scope(twin), str(uuid.uuid4()),
                                       assignment_body(twin, vm.principal_id, principal_type="User"))
    assert mismatch.value.error.code == "UnmatchedPrincipalType"
    with pytest.raises(ResourceNotFoundError) as foreign:
        client.role_assignments.create(f"/subscriptions/{uuid.uuid4()}", str(uuid.uuid4()),
                                       assignment_body(twin, vm.principal_id))
    assert foreign.value.error.code == "SubscriptionNotFound"
    assert twin.rbac.assignments.keys().isdisjoint({"not-a-guid"})


def test_principal_not_found_during_replication_unless_principal_type_is_set(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock, principal_replication_seconds=120)
    client = authorization_client(twin)
    vm = twin.create_vm("fresh")
    with pytest.raises(HttpResponseError) as pending:
        client.role_assignments.create(key_scope(twin), str(uuid.uuid4()), assignment_body(twin, vm.principal_id))
    assert pending.value.status_code == 400 and pending.value.error.code == "PrincipalNotFound"
    assert vm.principal_id.replace("-", "") in pending.value.error.message
    typed = client.role_assignments.create(key_scope(twin), str(uuid.uuid4()),
                                           assignment_body(twin, vm.principal_id, principal_type="ServicePrincipal"))
    assert typed.principal_type == "ServicePrincipal"
    other = twin.create_vm("fresh-2")
    clock.advance(121)
    assert client.role_assignments.create(key_scope(twin), str(uuid.uuid4()),
                                          assignment_body(twin, other.principal_id)).principal_type == "ServicePrincipal"


def test_principal_not_found_fault_window(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock)
    client = authorization_client(twin)
    vm = twin.create_vm("victim")
    twin.faults.add("principal_not_found", principal_id=vm.principal_id, duration=60)
    body = assignment_body(twin, vm.principal_id, principal_type="ServicePrincipal")
    with pytest.raises(HttpResponseError) as first:
        client.role_assignments.create(key_scope(twin), str(uuid.uuid4()), body)
    assert first.value.error.code == "PrincipalNotFound"
    clock.advance(61)
    assert client.role_assignments.create(key_scope(twin), str(uuid.uuid4()), body).principal_id == vm.principal_id


def test_delete_is_200_then_204_and_get_404(twin: Twin) -> None:
    client = authorization_client(twin)
    vm = twin.create_vm("cvm-3")
    name = str(uuid.uuid4())
    client.role_assignments.create(key_scope(twin), name, assignment_body(twin, vm.principal_id))
    assert client.role_assignments.delete(key_scope(twin), name).name == name
    assert client.role_assignments.delete(key_scope(twin), name) is None
    with pytest.raises(ResourceNotFoundError) as missing:
        client.role_assignments.get(key_scope(twin), name)
    assert missing.value.error.code == "RoleAssignmentNotFound"


def test_list_filters_principal_and_at_scope(twin: Twin) -> None:
    client = authorization_client(twin)
    vm_a, vm_b = twin.create_vm("a"), twin.create_vm("b")
    client.role_assignments.create(key_scope(twin, "ka"), str(uuid.uuid4()), assignment_body(twin, vm_a.principal_id))
    client.role_assignments.create(key_scope(twin, "kb"), str(uuid.uuid4()), assignment_body(twin, vm_b.principal_id))
    vault = twin.vault().resource_id
    mine = list(client.role_assignments.list_for_scope(vault, filter=f"principalId eq '{vm_a.principal_id}'"))
    assert [a.scope for a in mine] == [key_scope(twin, "ka")]  # below the vault scope
    at_vault = list(client.role_assignments.list_for_scope(vault, filter="atScope()"))
    assert {a.principal_id for a in at_vault} == {twin.app_principal.object_id, twin.operator_principal.object_id}
    assert all(not a.scope.lower().endswith(("/keys/ka", "/keys/kb")) for a in at_vault)
    at_key = list(client.role_assignments.list_for_scope(key_scope(twin, "ka"), filter="atScope()"))
    assert vm_a.principal_id in {a.principal_id for a in at_key}
    assert vm_b.principal_id not in {a.principal_id for a in at_key}
    everything = list(client.role_assignments.list_for_subscription())
    assert {vm_a.principal_id, vm_b.principal_id} <= {a.principal_id for a in everything}
    with pytest.raises(HttpResponseError) as bad:
        list(client.role_assignments.list_for_scope(vault, filter="roleDefinitionId eq 'x'"))
    assert bad.value.error.code == "UnsupportedQuery"


def test_list_pages_with_next_link(twin_factory) -> None:
    twin = twin_factory(arm_page_size=2)
    client = authorization_client(twin)
    vms = [twin.create_vm(f"p{i}") for i in range(5)]
    for vm in vms:
        client.role_assignments.create(key_scope(twin), str(uuid.uuid4()), assignment_body(twin, vm.principal_id))
    pages = list(client.role_assignments.list_for_scope(key_scope(twin), filter="atScope()").by_page())
    listed = [a.principal_id for p in pages for a in p]
    assert len(pages) >= 3 and {vm.principal_id for vm in vms} <= set(listed)
    assert len(listed) == len(set(a.name for p in client.role_assignments.list_for_scope(
        key_scope(twin), filter="atScope()").by_page() for a in p))


def test_rbac_denies_a_principal_without_a_role(twin: Twin) -> None:
    stranger = twin.add_principal("stranger", replicated=True)
    client = authorization_client(twin, stranger.object_id)
    vm = twin.create_vm("cvm-4")
    with pytest.raises(HttpResponseError) as denied:
        client.role_assignments.create(key_scope(twin), str(uuid.uuid4()), assignment_body(twin, vm.principal_id))
    assert denied.value.status_code == 403 and denied.value.error.code == "AuthorizationFailed"
    assert "Microsoft.Authorization/roleAssignments/write" in denied.value.error.message
    assert twin.counters.get(caller=stranger.object_id, operation="Microsoft.Authorization/roleAssignments/write") == 1
    reader = twin.add_principal("reader", replicated=True)
    twin.grant(reader.object_id, "Contributor", sub_scope(twin))
    with pytest.raises(HttpResponseError) as contributor:  # notActions: Microsoft.Authorization/*/Write
        authorization_client(twin, reader.object_id).role_assignments.create(
            key_scope(twin), str(uuid.uuid4()), assignment_body(twin, vm.principal_id))
    assert contributor.value.error.code == "AuthorizationFailed"


def test_app_identity_is_least_privilege(twin: Twin) -> None:
    client = authorization_client(twin)
    vm = twin.create_vm("cvm-5")
    elsewhere = f"{sub_scope(twin)}/resourceGroups/other-rg"
    with pytest.raises(HttpResponseError) as outside_vault:
        client.role_assignments.create(elsewhere, str(uuid.uuid4()), assignment_body(twin, vm.principal_id))
    assert outside_vault.value.error.code == "AuthorizationFailed"
    app = twin.app_principal.object_id
    assert twin.rbac.check(app, "Microsoft.Compute/virtualMachines/read", vm.resource_id, data_action=False)
    assert twin.rbac.check(app, "Microsoft.Compute/virtualMachines/runCommands/write", vm.resource_id,
                           data_action=False)
    assert not twin.rbac.check(app, "Microsoft.Compute/virtualMachines/write", vm.resource_id, data_action=False)
    assert not twin.rbac.check(app, "Microsoft.Compute/virtualMachines/delete", vm.resource_id, data_action=False)
    assert twin.rbac.check(app, "Microsoft.KeyVault/vaults/keys/create/action", key_scope(twin), data_action=True)
    assert twin.rbac.check(app, "Microsoft.EventGrid/events/send/action", twin.topic_resource_id, data_action=True)
    assert not twin.rbac.check(app, "Microsoft.EventGrid/events/send/action", sub_scope(twin), data_action=True)


def test_assignment_writes_emit_resource_events(twin: Twin) -> None:
    client = authorization_client(twin)
    vm = twin.create_vm("cvm-6")
    name = str(uuid.uuid4())
    created = client.role_assignments.create(key_scope(twin), name, assignment_body(twin, vm.principal_id))
    client.role_assignments.delete(key_scope(twin), name)
    write, delete = twin.events.emitted[-2:]
    assert write["eventType"] == "Microsoft.Resources.ResourceWriteSuccess" and write["subject"] == created.id
    assert write["data"]["operationName"] == "Microsoft.Authorization/roleAssignments/write"
    assert write["data"]["authorization"]["evidence"]["role"] == "Role Based Access Control Administrator"
    assert "httpRequest" not in write["data"]  # a create carries no httpRequest
    assert delete["eventType"] == "Microsoft.Resources.ResourceDeleteSuccess"
    assert delete["data"]["httpRequest"]["method"] == "DELETE"
    claims = write["data"]["claims"]
    assert claims["http://schemas.microsoft.com/identity/claims/objectidentifier"] == twin.app_principal.object_id
