"""The few Azure reads entry points need to decide what to start (through skr.services, in a thread).

Client functions may not block the worker's event loop, and the SDK clients are synchronous.
"""

from __future__ import annotations

import asyncio
import logging

from azure.core.exceptions import AzureError

from skr import clients
from skr.errors import Operation, SkrError, classify
from skr.models import AssignmentRef, VmFacts, VmResourceId
from skr.services.rbac import RbacService
from skr.services.vms import VmService
from skr.settings import Settings
from skr.workflow.instances import VmIdentity

log = logging.getLogger("skr.triggers")


async def read_identity(vm_id: VmResourceId) -> VmIdentity | None:
    """The VM's current identity, or None when it cannot be read (the caller then leaves things be)."""
    try:
        facts = await asyncio.to_thread(VmService(clients.get_factory()).inspect, vm_id)
    except (AzureError, SkrError) as exc:
        log.info("could not read %s to compare its identity: %s", vm_id, classify(exc, Operation.VM_READ).describe())
        return None
    return VmIdentity.of_facts(facts)


async def list_fleet(settings: Settings) -> tuple[list[VmFacts], list[AssignmentRef]]:
    """CVMs in scope and release-role assignments at the vault's keys (errors propagate)."""
    factory = clients.get_factory()
    vms = await asyncio.to_thread(VmService(factory).list_cvms, settings.scopes, settings.tag_filter)
    assignments = await asyncio.to_thread(RbacService(factory, settings).list_release_assignments)
    return vms, assignments
