"""ARM resource ids: building, parsing and case-insensitive scope arithmetic."""

from __future__ import annotations

import re

_VM_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/"
    r"virtualMachines/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


def vm_resource_id(subscription_id: str, resource_group: str, name: str) -> str:
    return (f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{name}")


def vault_resource_id(subscription_id: str, resource_group: str, name: str) -> str:
    return (f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{name}")


def parse_vm_id(resource_id: str) -> tuple[str, str, str] | None:
    """(subscription, resource group, name) of a VM id, or None."""
    match = _VM_RE.match(resource_id.rstrip("/"))
    if match is None:
        return None
    return match["sub"], match["rg"], match["name"]


def normalize_scope(scope: str) -> str:
    """Lower-case, one leading slash, no trailing slash ("/" stays "/")."""
    cleaned = "/" + scope.strip().strip("/")
    return cleaned.lower()


def scope_covers(outer: str, inner: str) -> bool:
    """True when ``inner`` is ``outer`` or lies below it (segment-aware, case-insensitive)."""
    outer_n, inner_n = normalize_scope(outer), normalize_scope(inner)
    return outer_n in ("/", inner_n) or inner_n.startswith(outer_n + "/")


def subscription_of(scope: str) -> str | None:
    parts = scope.strip("/").split("/")
    if len(parts) >= 2 and parts[0].lower() == "subscriptions":
        return parts[1].lower()
    return None
