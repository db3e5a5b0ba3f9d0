"""ARM Microsoft.Compute virtual machines: GET (+instanceView), LIST (paged), PUT (simulated VMs), DELETE.

How a PUT body picks the simulated VM's TEE profile:

* ``properties.securityProfile.securityType`` ``ConfidentialVM`` -> ``compliant_cvm``,
  ``TrustedLaunch`` -> ``trusted_launch``, absent or ``Standard`` -> ``plain``;
* the tag ``twin-tee`` (any :class:`TeeProfile` value, e.g. ``noncompliant_cvm``) overrides that
  choice when it agrees with the securityType (a CVM whose attestation is not azure-compliant).

``identity.type`` containing ``SystemAssigned`` gives the VM a new principal (its managed identity).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from localdev.twin.arm import page, require_api_version, require_subscription
from localdev.twin.http import arm_fail, ci_route, read_json
from localdev.twin.model import Principal, SimVm, TeeProfile
from localdev.twin.operations import Operation
from localdev.twin.rbac import iso
from localdev.twin.resource_ids import vm_resource_id

if TYPE_CHECKING:
    from localdev.twin.core import Twin

TEE_TAG = "twin-tee"
_VM = "Microsoft.Compute/virtualMachines"
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9_])?$")
_SECURITY_TYPES = {"confidentialvm": TeeProfile.COMPLIANT_CVM, "trustedlaunch": TeeProfile.TRUSTED_LAUNCH,
                   "standard": TeeProfile.PLAIN}


def _invalid(message: str, target: str | None = None) -> Exception:
    details = [{"code": "InvalidParameter", "target": target, "message": message}] if target else None
    return arm_fail(400, "InvalidParameter", message, details=details)


def validate_vm_name(name: str) -> None:
    if not _NAME.match(name):
        raise _invalid(f"The VM name '{name}' is invalid: use 1-64 letters, digits, '.', '_' or '-', starting with "
                       "a letter or digit and not ending with '.' or '-'.", "name")


def tee_from_body(props: dict[str, Any], tags: dict[str, str]) -> TeeProfile:
    security = (props.get("securityProfile") or {}).get("securityType")
    if security is None:
        chosen = TeeProfile.PLAIN
    elif isinstance(security, str) and security.lower() in _SECURITY_TYPES:
        chosen = _SECURITY_TYPES[security.lower()]
    else:
        raise _invalid(f"The value '{security}' of securityProfile.securityType is not valid. Allowed values: "
                       "TrustedLaunch, ConfidentialVM, Standard.", "securityProfile.securityType")
    tag = next((v for k, v in tags.items() if k.lower() == TEE_TAG), None)
    if tag is None:
        return chosen
    try:
        tagged = TeeProfile(tag.lower())
    except ValueError as exc:
        raise _invalid(f"Tag '{TEE_TAG}' must be one of {', '.join(p.value for p in TeeProfile)}; got '{tag}'.",
                       f"tags.{TEE_TAG}") from exc
    if tagged.security_type != chosen.security_type:
        raise _invalid(f"Tag '{TEE_TAG}={tag}' needs securityType '{tagged.security_type or 'Standard'}', but the "
                       f"body asks for '{security or 'Standard'}'.", f"tags.{TEE_TAG}")
    return tagged


def _os_type(props: dict[str, Any]) -> str:
    os_disk = (props.get("storageProfile") or {}).get("osDisk") or {}
    if isinstance(os_disk.get("osType"), str):
        if os_disk["osType"].lower() not in ("linux", "windows"):
            raise _invalid(f"osType '{os_disk['osType']}' is not valid: Linux or Windows.", "storageProfile.osDisk")
        return "Windows" if os_disk["osType"].lower() == "windows" else "Linux"
    return "Windows" if (props.get("osProfile") or {}).get("windowsConfiguration") is not None else "Linux"


def vm_json(twin: Twin, vm: SimVm, *, instance_view: bool = False) -> dict[str, Any]:
    """The VM as ARM returns it (VirtualMachine model, camelCase REST keys)."""
    props: dict[str, Any] = {
        "vmId": vm.vm_id,
        "hardwareProfile": {"vmSize": vm.vm_size},
        "storageProfile": {
            "imageReference": ({"publisher": "Canonical", "offer": "0001-com-ubuntu-confidential-vm-jammy",
                                "sku": "22_04-lts-cvm", "version": "latest"} if vm.os_type == "Linux" else
                               {"publisher": "MicrosoftWindowsServer", "offer": "WindowsServer",
                                "sku": "2022-datacenter-smalldisk-g2", "version": "latest"}),
            "osDisk": {
                "osType": vm.os_type, "name": f"{vm.name}_OsDisk_1", "createOption": "FromImage",
                "caching": "ReadWrite", "deleteOption": "Delete", "diskSizeGB": 30,
                "managedDisk": {"storageAccountType": "Premium_LRS"},
            },
            "dataDisks": [],
        },
        "osProfile": {"computerName": vm.name[:15], "adminUsername": "azureuser", "secrets": [],
                      "allowExtensionOperations": True},
        "networkProfile": {"networkInterfaces": [{"id": f"/subscriptions/{vm.subscription_id}/resourceGroups/"
                                                  f"{vm.resource_group}/providers/Microsoft.Network/"
                                                  f"networkInterfaces/{vm.name}-nic"}]},
        "provisioningState": vm.provisioning_state,
        "timeCreated": iso(vm.created_at),
    }
    if vm.os_type == "Linux":
        props["osProfile"]["linuxConfiguration"] = {"disablePasswordAuthentication": True, "provisionVMAgent": True}
    else:
        props["osProfile"]["windowsConfiguration"] = {"provisionVMAgent": True, "enableAutomaticUpdates": True}
    if vm.tee.security_type is not None:
        props["securityProfile"] = {"securityType": vm.tee.security_type,
                                    "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True}}
    if vm.tee.security_type == "ConfidentialVM":
        props["storageProfile"]["osDisk"]["managedDisk"]["securityProfile"] = {
            "securityEncryptionType": "DiskWithVMGuestState"}
    if instance_view:
        props["instanceView"] = instance_view_json(vm)
    body: dict[str, Any] = {"name": vm.name, "id": vm.resource_id, "type": _VM, "location": vm.location,
                            "tags": dict(vm.tags), "properties": props}
    if vm.principal_id is not None:
        body["identity"] = {"type": "SystemAssigned", "principalId": vm.principal_id,
                            "tenantId": twin.config.tenant_id}
    return body


def instance_view_json(vm: SimVm) -> dict[str, Any]:
    state = vm.provisioning_state
    return {
        "computerName": vm.name[:15],
        "osName": "ubuntu" if vm.os_type == "Linux" else "Windows Server 2022 Datacenter",
        "osVersion": "22.04" if vm.os_type == "Linux" else "10.0.20348",
        "hyperVGeneration": "V2",
        "vmAgent": {"vmAgentVersion": "2.10.0.8", "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready",
             "message": "Guest Agent is running", "time": iso(vm.created_at)}]},
        "statuses": [
            {"code": f"ProvisioningState/{state.lower()}", "level": "Info",
             "displayStatus": f"Provisioning {state.lower()}", "time": iso(vm.created_at)},
            {"code": f"PowerState/{vm.power_state}", "level": "Info",
             "displayStatus": f"VM {vm.power_state}"},
        ],
    }


def build_vm(twin: Twin, name: str, *, resource_group: str, tee: TeeProfile, os_type: str, identity: bool,
             tags: dict[str, str], location: str | None, vm_size: str, state: str) -> SimVm:
    """A new SimVm (and its identity principal) registered in the twin; slow part: the vTPM key."""
    validate_vm_name(name)
    resource_id = vm_resource_id(twin.config.subscription_id, resource_group, name)
    vm = SimVm(resource_id=resource_id, name=name, resource_group=resource_group,
               subscription_id=twin.config.subscription_id, location=location or twin.config.location, tee=tee,
               os_type=os_type, tags=dict(tags), provisioning_state=state, vm_size=vm_size,
               created_at=twin.clock.time())
    if identity:
        vm.principal_id = twin.add_principal(name, vm_resource_id=resource_id).object_id
    with twin.lock:
        twin.vms[vm.key] = vm
    return vm


def create_simulated_vm(twin: Twin, name: str, *, resource_group: str, tee: TeeProfile, os_type: str,
                        identity: bool, tags: dict[str, str], location: str | None, vm_size: str,
                        caller_principal_id: str | None, emit_event: bool) -> SimVm:
    if twin.find_vm(vm_resource_id(twin.config.subscription_id, resource_group, name)) is not None:
        raise ValueError(f"VM {resource_group}/{name} already exists")
    if os_type not in ("Linux", "Windows"):
        raise ValueError(f"os_type must be 'Linux' or 'Windows', got {os_type!r}")
    vm = build_vm(twin, name, resource_group=resource_group, tee=tee, os_type=os_type, identity=identity, tags=tags,
                  location=location, vm_size=vm_size, state="Succeeded")
    if emit_event:
        caller = twin.principal(caller_principal_id or twin.operator_principal.object_id)
        twin.events.resource_event("Microsoft.Resources.ResourceWriteSuccess", vm.resource_id, f"{_VM}/write",
                                   caller or twin.operator_principal)
    return vm


def delete_simulated_vm(twin: Twin, resource_id: str, *, caller_principal_id: str | None,
                        emit_event: bool) -> SimVm | None:
    with twin.lock:
        vm = twin.vms.pop(resource_id.rstrip("/").lower(), None)
        if vm is None:
            return None
        vm.deleted = True
        vm.provisioning_state = "Deleted"
        twin.deleted_vms[vm.key] = vm
    if vm.principal_id is not None:
        principal = twin.principal(vm.principal_id)
        if principal is not None:
            twin.identity.retire(principal)
        twin.remove_principal(vm.principal_id)
    if emit_event:
        caller = twin.principal(caller_principal_id or twin.operator_principal.object_id)
        twin.events.resource_event("Microsoft.Resources.ResourceDeleteSuccess", vm.resource_id, f"{_VM}/delete",
                                   caller or twin.operator_principal, http_method="DELETE")
    return vm


class ComputeApi:
    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self._deleting: dict[str, Operation] = {}  # VM key -> its delete operation

    def _vm_id(self, request: Request) -> str:
        p = request.path_params
        require_subscription(self.twin, p["sub"])
        return vm_resource_id(self.twin.config.subscription_id, p["rg"], p["vm"])

    def _not_found(self, request: Request) -> Exception:
        p = request.path_params
        return arm_fail(404, "ResourceNotFound", f"The Resource '{_VM}/{p['vm']}' under resource group '{p['rg']}' "
                        "was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")

    def _existing(self, request: Request, action: str) -> SimVm:
        """The VM a GET addresses, after the front door (api-version, subscription, auth, RBAC)."""
        require_api_version(request)
        resource_id = self._vm_id(request)
        self.twin.arm_call(request, action, resource_id)
        vm = self.twin.find_vm(resource_id)
        if vm is None:
            raise self._not_found(request)
        return vm

    async def get_vm(self, request: Request) -> Response:
        vm = self._existing(request, f"{_VM}/read")
        expand = (request.query_params.get("$expand") or "").lower()
        if expand and expand not in ("instanceview", "userdata"):
            raise _invalid(f"The value '{expand}' of $expand is not valid: instanceView or userData.", "$expand")
        return JSONResponse(vm_json(self.twin, vm, instance_view=expand == "instanceview"))

    async def get_instance_view(self, request: Request) -> Response:
        vm = self._existing(request, f"{_VM}/instanceView/read")
        return JSONResponse(instance_view_json(vm))

    async def list_vms(self, request: Request) -> Response:
        twin = self.twin
        require_api_version(request)
        p = request.path_params
        require_subscription(twin, p["sub"])
        scope = f"/subscriptions/{twin.config.subscription_id}"
        if "rg" in p:
            scope += f"/resourceGroups/{p['rg']}"
        twin.arm_call(request, f"{_VM}/read", scope)
        prefix = scope.lower() + "/"
        with twin.lock:
            vms = sorted((vm for key, vm in twin.vms.items() if key.startswith(prefix)), key=lambda v: v.key)
        return JSONResponse(page(request, [vm_json(twin, vm) for vm in vms], twin.config.arm_page_size))

    async def put_vm(self, request: Request) -> Response:
        twin = self.twin
        api_version = require_api_version(request)
        resource_id = self._vm_id(request)
        caller = twin.arm_call(request, f"{_VM}/write", resource_id)
        body = await read_json(request, lambda m: arm_fail(400, "InvalidRequestContent", m))
        if not isinstance(body, dict):
            raise arm_fail(400, "InvalidRequestContent", "The request body must be a JSON object.")
        location = body.get("location")
        if not isinstance(location, str) or not location:
            raise arm_fail(400, "LocationRequired", "The location property is required for this definition.")
        tags = body.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
            raise _invalid("Tags must be an object of string values.", "tags")
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise arm_fail(400, "InvalidRequestContent", "'properties' must be an object.")
        tee = tee_from_body(props, tags)
        identity_type = str((body.get("identity") or {}).get("type") or "None")
        wants_identity = "systemassigned" in identity_type.replace(" ", "").lower()
        vm_size = str((props.get("hardwareProfile") or {}).get("vmSize") or "Standard_DC2as_v5")
        existing = twin.find_vm(resource_id)
        if existing is not None:
            return self._update(request, existing, tee, tags, wants_identity=wants_identity, caller=caller)
        validate_vm_name(request.path_params["vm"])
        os_type = _os_type(props)
        vm = await asyncio.to_thread(build_vm, twin, request.path_params["vm"],
                                     resource_group=request.path_params["rg"], tee=tee, os_type=os_type,
                                     identity=wants_identity, tags=tags, location=location.replace(" ", "").lower(),
                                     vm_size=vm_size, state="Creating")

        def provisioned(_: Operation) -> None:
            if not vm.deleted:
                vm.provisioning_state = "Succeeded"
                twin.events.resource_event("Microsoft.Resources.ResourceWriteSuccess", vm.resource_id,
                                           f"{_VM}/write", caller)

        op = twin.operations.start(vm.resource_id, location=vm.location, kind="vm-create",
                                   done_in=twin.config.vm_provision_seconds, on_done=provisioned)
        headers = {"Azure-AsyncOperation": twin.operations.urls(op, api_version)[0]}
        return JSONResponse(vm_json(twin, vm), status_code=201, headers=headers)

    def _update(self, request: Request, vm: SimVm, tee: TeeProfile, tags: dict[str, str], *, wants_identity: bool,
                caller: Principal) -> Response:
        twin = self.twin
        if vm.provisioning_state == "Deleting":
            raise arm_fail(409, "OperationNotAllowed", "The VM is being deleted; no update is allowed.")
        if tee.security_type != vm.tee.security_type:
            raise arm_fail(409, "PropertyChangeNotAllowed", "Changing property 'securityProfile.securityType' is not "
                           "allowed.", details=[{"code": "PropertyChangeNotAllowed",
                                                 "target": "securityProfile.securityType",
                                                 "message": "Changing property 'securityType' is not allowed."}])
        with twin.lock:
            vm.tags = dict(tags)
            vm.tee = tee
            if wants_identity and vm.principal_id is None:
                vm.principal_id = twin.add_principal(vm.name, vm_resource_id=vm.resource_id).object_id
            elif not wants_identity and vm.principal_id is not None:
                principal = twin.principal(vm.principal_id)
                if principal is not None:
                    twin.identity.retire(principal)
                twin.remove_principal(vm.principal_id)
                vm.principal_id = None
        twin.events.arm_event(request, "Microsoft.Resources.ResourceWriteSuccess", vm.resource_id, f"{_VM}/write",
                              caller)
        return JSONResponse(vm_json(twin, vm), status_code=200)

    async def delete_vm(self, request: Request) -> Response:
        twin = self.twin
        api_version = require_api_version(request)
        resource_id = self._vm_id(request)
        caller = twin.arm_call(request, f"{_VM}/delete", resource_id)
        vm = twin.find_vm(resource_id)
        if vm is None:
            return Response(status_code=204)
        op = self._deleting.get(vm.key)
        if op is None:
            vm.provisioning_state = "Deleting"

            def deleted(_: Operation) -> None:
                self._deleting.pop(vm.key, None)
                delete_simulated_vm(twin, vm.resource_id, caller_principal_id=caller.object_id, emit_event=True)

            op = twin.operations.start(vm.resource_id, location=vm.location, kind="vm-delete",
                                       done_in=twin.config.vm_delete_seconds, on_done=deleted)
            self._deleting[vm.key] = op
        return Response(status_code=202, headers=twin.operations.headers(op, api_version))

    def routes(self) -> list[BaseRoute]:
        vm = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines"
        return [
            ci_route(f"{vm}/{{vm}}/instanceView", self.get_instance_view, ["GET"]),
            ci_route(f"{vm}/{{vm}}", self.get_vm, ["GET"]),
            ci_route(f"{vm}/{{vm}}", self.put_vm, ["PUT"]),
            ci_route(f"{vm}/{{vm}}", self.delete_vm, ["DELETE"]),
            ci_route(vm, self.list_vms, ["GET"]),
            ci_route("/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines", self.list_vms, ["GET"]),
        ]


def routes(twin: Twin) -> list[BaseRoute]:
    return ComputeApi(twin).routes()
