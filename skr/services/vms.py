"""Read VMs: what onboarding needs to know about one VM, and the CVMs inside the configured scopes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from enum import Enum
from typing import Any

from azure.mgmt.compute import ComputeManagementClient

from skr.clients import ClientFactory
from skr.models import ResourceIdError, ScopeId, VmFacts, VmResourceId
from skr.settings import TagFilter


class VmService:
    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory

    def _compute(self, subscription_id: str) -> ComputeManagementClient:
        return self._factory.compute(subscription_id)

    def inspect(self, vm_id: VmResourceId) -> VmFacts:
        """One GET with the instance view (power state); Azure errors propagate for classification."""
        vm = self._compute(vm_id.subscription_id).virtual_machines.get(
            vm_id.resource_group, vm_id.name, expand="instanceView"
        )
        return vm_facts(vm, fallback_id=vm_id)

    def list_cvms(self, scopes: Iterable[ScopeId], tag_filter: TagFilter | None = None) -> list[VmFacts]:
        """Confidential VMs inside ``scopes`` (and carrying the filter tag), each listed once.

        Listing has no instance view, so ``power_state`` is None here; onboarding inspects each VM.
        """
        found: dict[VmResourceId, VmFacts] = {}
        for scope in _outermost(scopes):
            for vm in self._list_scope(scope):
                try:
                    facts = vm_facts(vm)
                except ResourceIdError:
                    continue  # not a VM id we could act on; nothing to onboard
                if not facts.is_confidential or not any(s.contains(facts.vm_id) for s in scopes):
                    continue
                if tag_filter is not None and not tag_filter.matches(facts.tags):
                    continue
                found.setdefault(facts.vm_id, facts)
        return sorted(found.values(), key=lambda f: str(f.vm_id).lower())

    def _list_scope(self, scope: ScopeId) -> Iterator[Any]:
        operations = self._compute(scope.subscription_id).virtual_machines
        if scope.resource_group:
            yield from operations.list(scope.resource_group)
        else:
            yield from operations.list_all()


def _outermost(scopes: Iterable[ScopeId]) -> list[ScopeId]:
    """Drop resource-group scopes whose subscription is listed too (one listing covers them)."""
    items = list(dict.fromkeys(scopes))
    subscriptions = {s.subscription_id.lower() for s in items if s.resource_group is None}
    return [s for s in items if s.resource_group is None or s.subscription_id.lower() not in subscriptions]


def vm_facts(vm: Any, *, fallback_id: VmResourceId | None = None) -> VmFacts:
    """Map an SDK VirtualMachine to VmFacts (no secrets: ids, types, states, tags)."""
    vm_id = VmResourceId.parse(vm.id) if getattr(vm, "id", None) else fallback_id
    if vm_id is None:
        raise ResourceIdError("the VM has no resource id")
    identity = getattr(vm, "identity", None)
    identity_type = _text(getattr(identity, "type", None)) or ""
    principal_id = getattr(identity, "principal_id", None) if "systemassigned" in identity_type.lower() else None
    security = getattr(vm, "security_profile", None)
    return VmFacts(
        vm_id=vm_id,
        unique_id=getattr(vm, "vm_id", None),
        location=getattr(vm, "location", None),
        security_type=_text(getattr(security, "security_type", None)),
        principal_id=principal_id.lower() if isinstance(principal_id, str) else None,
        tenant_id=getattr(identity, "tenant_id", None) if principal_id else None,
        os_type=_os_type(vm),
        provisioning_state=_text(getattr(vm, "provisioning_state", None)),
        power_state=_power_state(getattr(vm, "instance_view", None)),
        tags=dict(getattr(vm, "tags", None) or {}),
    )


def _text(value: Any) -> str | None:
    """SDK values may be plain strings or str-enums (whose str() is the member name, not the value)."""
    if value is None:
        return None
    return str(value.value) if isinstance(value, Enum) else str(value)


def _os_type(vm: Any) -> str | None:
    os_disk = getattr(getattr(vm, "storage_profile", None), "os_disk", None)
    os_type = _text(getattr(os_disk, "os_type", None))
    if os_type:
        return os_type
    # The create response omits osType; the OS profile still says which OS it is.
    os_profile = getattr(vm, "os_profile", None)
    if getattr(os_profile, "linux_configuration", None) is not None:
        return "Linux"
    if getattr(os_profile, "windows_configuration", None) is not None:
        return "Windows"
    return None


def _power_state(instance_view: Any) -> str | None:
    for status in getattr(instance_view, "statuses", None) or []:
        code = _text(getattr(status, "code", None)) or ""
        if code.lower().startswith("powerstate/"):
            return code.split("/", 1)[1]
    return None
