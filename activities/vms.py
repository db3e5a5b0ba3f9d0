"""VM activities: inspect one VM, list the CVMs in the configured scopes."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df
from pydantic import BaseModel, ConfigDict

from activities._common import Empty, factory, parse_input, run, settings
from skr.errors import Operation
from skr.models import VmFacts, VmResourceId
from skr.services.vms import VmService

bp = df.Blueprint()


class InspectVmInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    vm_id: VmResourceId


class VmList(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    vms: list[VmFacts]


@bp.activity_trigger(input_name="payload")
def inspect_vm(payload: Any) -> dict[str, Any]:
    """VmFacts of one VM (a missing VM is the classified error vm_not_found)."""
    request = parse_input("inspect_vm", InspectVmInput, payload)
    return run(
        "inspect_vm", Operation.VM_READ, lambda: VmService(factory()).inspect(request.vm_id), subject=request.vm_id
    )


@bp.activity_trigger(input_name="payload")
def list_cvms_in_scope(payload: Any) -> dict[str, Any]:
    """Every Confidential VM inside SKR_SCOPES carrying SKR_TAG_FILTER (when set)."""
    parse_input("list_cvms_in_scope", Empty, payload)
    config = settings()
    return run(
        "list_cvms_in_scope",
        Operation.VM_READ,
        lambda: VmList(vms=VmService(factory()).list_cvms(config.scopes, config.tag_filter)),
    )
