"""Key activities: ensure the VM's release key, disable a per-VM key on offboarding."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df
from pydantic import BaseModel, ConfigDict

from activities._common import factory, parse_input, run, settings
from skr.errors import Operation
from skr.models import KeyRef, VmFacts
from skr.services.keys import KeyService

bp = df.Blueprint()


class EnsureKeyInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    vm: VmFacts
    key_name: str | None = None  # override; else the VM's key tag, else the name template


class DisableKeyInput(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    key: KeyRef


class Disabled(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    disabled: bool


@bp.activity_trigger(input_name="payload")
def ensure_key(payload: Any) -> dict[str, Any]:
    """KeyRef of the exportable HSM key with the configured release policy (created or reused)."""
    request = parse_input("ensure_key", EnsureKeyInput, payload)

    def call() -> KeyRef:
        service = KeyService(factory(), settings())
        name, shared = service.choose_name(request.vm, request.key_name)
        return service.ensure(name, shared=shared)

    return run("ensure_key", Operation.KEY_WRITE, call, subject=request.vm.vm_id)


@bp.activity_trigger(input_name="payload")
def disable_key(payload: Any) -> dict[str, Any]:
    """Disable a per-VM key (every version); a shared key is never disabled."""
    request = parse_input("disable_key", DisableKeyInput, payload)
    return run(
        "disable_key",
        Operation.KEY_WRITE,
        lambda: Disabled(disabled=KeyService(factory(), settings()).disable(request.key)),
        subject=request.key.name,
    )
