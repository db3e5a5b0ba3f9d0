"""ARM Compute virtual machines through the real azure-mgmt-compute client (not run commands)."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from localdev.clock import VirtualClock
from localdev.twin.core import Twin
from localdev.twin.model import TeeProfile
from localdev.twin.testing import compute_client

CVM_BODY = {
    "location": "westeurope",
    "identity": {"type": "SystemAssigned"},
    "tags": {"env": "test"},
    "properties": {
        "hardwareProfile": {"vmSize": "Standard_DC4as_v5"},
        "securityProfile": {"securityType": "ConfidentialVM",
                            "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True}},
        "storageProfile": {"osDisk": {"osType": "Linux", "createOption": "FromImage"}},
    },
}


def operator_compute(twin: Twin):
    return compute_client(twin, twin.operator_principal.object_id)


def test_create_polls_the_async_operation_until_provisioned(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock, vm_provision_seconds=45)
    client = operator_compute(twin)
    poller = client.virtual_machines.begin_create_or_update("cvm-rg", "cvm-1", CVM_BODY)
    vm = twin.find_vm(name="cvm-1")
    assert vm is not None and vm.tee is TeeProfile.COMPLIANT_CVM and vm.vm_size == "Standard_DC4as_v5"
    result = poller.result()  # the idle virtual clock jumps to the operation's end
    assert result.provisioning_state == "Succeeded"
    assert clock.time() >= vm.created_at + 45
    assert result.identity.type == "SystemAssigned" and result.identity.principal_id == vm.principal_id
    assert result.identity.tenant_id == twin.config.tenant_id
    assert result.security_profile.security_type == "ConfidentialVM"
    assert result.storage_profile.os_disk.managed_disk.security_profile.security_encryption_type == \
        "DiskWithVMGuestState"
    assert result.vm_id == vm.vm_id and result.tags == {"env": "test"}
    assert twin.counters.get(operation="Microsoft.Compute/locations/operations/read") >= 1
    writes = [e for e in twin.events.emitted if e["data"]["operationName"] == "Microsoft.Compute/virtualMachines/write"]
    assert [e["subject"] for e in writes] == [vm.resource_id]


def test_get_with_instance_view_and_the_instance_view_route(twin: Twin) -> None:
    vm = twin.create_vm("cvm-2", os_type="Windows")
    client = compute_client(twin)
    got = client.virtual_machines.get("cvm-rg", "CVM-2", expand="instanceView")  # names compare case-insensitively
    codes = [s.code for s in got.instance_view.statuses]
    assert codes == ["ProvisioningState/succeeded", "PowerState/running"]
    assert got.storage_profile.os_disk.os_type == "Windows"
    assert got.os_profile.windows_configuration is not None
    assert client.virtual_machines.get("cvm-rg", "cvm-2").instance_view is None
    view = client.virtual_machines.instance_view("cvm-rg", "cvm-2")
    assert view.statuses[1].display_status == "VM running"
    assert got.id == vm.resource_id
    with pytest.raises(ResourceNotFoundError) as missing:
        client.virtual_machines.get("cvm-rg", "nope")
    assert missing.value.error.code == "ResourceNotFound"


@pytest.mark.parametrize(("security", "tags", "expected"), [
    ("ConfidentialVM", {}, TeeProfile.COMPLIANT_CVM),
    ("ConfidentialVM", {"twin-tee": "noncompliant_cvm"}, TeeProfile.NONCOMPLIANT_CVM),
    ("TrustedLaunch", {}, TeeProfile.TRUSTED_LAUNCH),
    (None, {}, TeeProfile.PLAIN),
])
def test_tee_profile_comes_from_security_type_and_tag(twin: Twin, security, tags, expected) -> None:
    body = {"location": "westeurope", "tags": tags, "properties": {}}
    if security:
        body["properties"]["securityProfile"] = {"securityType": security}
    result = operator_compute(twin).virtual_machines.begin_create_or_update("rg", "vm", body).result()
    assert twin.find_vm(name="vm").tee is expected
    assert result.identity is None and twin.find_vm(name="vm").principal_id is None
    assert (result.security_profile.security_type if result.security_profile else None) == expected.security_type


def test_bad_create_bodies_are_refused_and_change_nothing(twin: Twin) -> None:
    client = operator_compute(twin)
    cases = [
        ({**CVM_BODY, "tags": {"twin-tee": "trusted_launch"}}, "InvalidParameter"),
        ({**CVM_BODY, "tags": {"twin-tee": "sgx"}}, "InvalidParameter"),
        ({**CVM_BODY, "properties": {"securityProfile": {"securityType": "Quantum"}}}, "InvalidParameter"),
        ({k: v for k, v in CVM_BODY.items() if k != "location"}, "LocationRequired"),
    ]
    for body, code in cases:
        with pytest.raises(HttpResponseError) as refused:
            client.virtual_machines.begin_create_or_update("rg", "vm", body)
        assert refused.value.status_code == 400 and refused.value.error.code == code
    with pytest.raises(HttpResponseError) as bad_name:
        client.virtual_machines.begin_create_or_update("rg", "bad_name-", CVM_BODY)
    assert bad_name.value.error.code == "InvalidParameter"
    assert twin.vms == {}


def test_update_changes_tags_and_identity_but_not_security_type(twin: Twin) -> None:
    client = operator_compute(twin)
    created = client.virtual_machines.begin_create_or_update("rg", "vm", CVM_BODY).result()
    first_principal = created.identity.principal_id
    updated = client.virtual_machines.begin_create_or_update("rg", "vm", {**CVM_BODY, "tags": {"skr-key": "shared"}}
                                                             ).result()
    assert updated.tags == {"skr-key": "shared"} and updated.identity.principal_id == first_principal
    no_identity = client.virtual_machines.begin_create_or_update("rg", "vm", {**CVM_BODY, "identity": {"type": "None"}}
                                                                 ).result()
    assert no_identity.identity is None and twin.principal(first_principal) is None
    with pytest.raises(HttpResponseError) as change:
        client.virtual_machines.begin_create_or_update("rg", "vm", {
            **CVM_BODY, "properties": {"securityProfile": {"securityType": "TrustedLaunch"}}})
    assert change.value.status_code == 409 and change.value.error.code == "PropertyChangeNotAllowed"


def test_list_by_resource_group_and_subscription_pages(twin_factory) -> None:
    twin = twin_factory(arm_page_size=2)
    for i in range(3):
        twin.create_vm(f"a{i}", resource_group="rg-a")
    for i in range(2):
        twin.create_vm(f"b{i}", resource_group="rg-b")
    client = compute_client(twin)
    pages = list(client.virtual_machines.list("rg-a").by_page())
    assert [[vm.name for vm in p] for p in pages] == [["a0", "a1"], ["a2"]]
    assert sorted(vm.name for vm in client.virtual_machines.list_all()) == ["a0", "a1", "a2", "b0", "b1"]
    assert [vm.name for vm in client.virtual_machines.list("empty-rg")] == []


def test_delete_runs_as_a_long_running_operation(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock, vm_delete_seconds=30)
    vm = twin.create_vm("doomed")
    client = operator_compute(twin)
    with clock.busy():  # keep virtual time still while we look at the "Deleting" state
        poller = client.virtual_machines.begin_delete("cvm-rg", "doomed")
        assert client.virtual_machines.get("cvm-rg", "doomed").provisioning_state == "Deleting"
    poller.result()
    assert twin.find_vm(vm.resource_id) is None and vm.deleted
    with pytest.raises(ResourceNotFoundError):
        client.virtual_machines.get("cvm-rg", "doomed")
    client.virtual_machines.begin_delete("cvm-rg", "doomed").result()  # 204 for a missing VM
    deletes = [e for e in twin.events.emitted if e["eventType"] == "Microsoft.Resources.ResourceDeleteSuccess"]
    assert [e["data"]["operationName"] for e in deletes] == ["Microsoft.Compute/virtualMachines/delete"]


def test_rbac_and_subscription_checks_on_compute(twin: Twin) -> None:
    vm = twin.create_vm("guarded")
    client = compute_client(twin)  # the app: read, no write or delete
    assert client.virtual_machines.get("cvm-rg", "guarded").name == "guarded"
    with pytest.raises(HttpResponseError) as write:
        client.virtual_machines.begin_create_or_update("cvm-rg", "guarded", CVM_BODY)
    assert write.value.status_code == 403 and write.value.error.code == "AuthorizationFailed"
    with pytest.raises(HttpResponseError) as delete:
        client.virtual_machines.begin_delete("cvm-rg", "guarded")
    assert delete.value.status_code == 403
    scoped = twin.add_principal("rg-reader", replicated=True)
    twin.grant(scoped.object_id, "Reader", f"/subscriptions/{twin.config.subscription_id}/resourceGroups/cvm-rg")
    reader = compute_client(twin, scoped.object_id)
    assert [v.name for v in reader.virtual_machines.list("cvm-rg")] == ["guarded"]
    with pytest.raises(HttpResponseError) as wide:
        list(reader.virtual_machines.list_all())
    assert wide.value.status_code == 403
    other = compute_client(twin)
    other._config.subscription_id = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(ResourceNotFoundError) as foreign:
        other.virtual_machines.get("cvm-rg", "guarded")
    assert foreign.value.error.code == "SubscriptionNotFound"
    assert twin.find_vm(vm.resource_id) is vm
