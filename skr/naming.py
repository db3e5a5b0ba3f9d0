"""Deterministic names: the same inputs always give the same id, so retries and duplicate events converge.

Durable de-duplicates on instance id, ARM on role-assignment name and managed run-command name,
Key Vault on key name; deriving each from the (lower-cased) resource ids makes every step
idempotent without any lookup table.
"""

from __future__ import annotations

import hashlib
import re
import string
import uuid
from enum import StrEnum

from skr.models import KeyResourceId, RoleDefinitionId, ScopeId, VmResourceId

INSTANCE_ID_MAX_LENGTH = 100
KEY_NAME_MAX_LENGTH = 127
KEY_NAME_PLACEHOLDERS = ("vm_name", "resource_group", "subscription_id")

ROLE_ASSIGNMENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:skr-orchestrator:role-assignment")
"""Fixed namespace of assignment GUIDs; changing it would orphan every existing assignment."""

_HASH_CHARS = 16
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9-]{1,127}$")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


class InstanceKind(StrEnum):
    ONBOARD = "onboard"
    OFFBOARD = "offboard"


class NamingError(ValueError):
    """A name that cannot be derived (bad template, illegal characters, bad input)."""


def _digest(*parts: str, length: int = _HASH_CHARS) -> str:
    joined = "\n".join(part.lower() for part in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:length]


def _slug(text: str, limit: int) -> str:
    slug = _NOT_SLUG.sub("-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "vm"


def instance_id(vm_id: VmResourceId, kind: InstanceKind = InstanceKind.ONBOARD) -> str:
    """``onboard-<vm-name-slug>-<hash>``: readable in ops tools, unique per VM id (any casing)."""
    digest = _digest(str(vm_id))
    room = INSTANCE_ID_MAX_LENGTH - len(kind.value) - len(digest) - 2
    return f"{kind.value}-{_slug(vm_id.name, room)}-{digest}"


def onboarding_instance_id(vm_id: VmResourceId) -> str:
    return instance_id(vm_id, InstanceKind.ONBOARD)


def offboarding_instance_id(vm_id: VmResourceId) -> str:
    return instance_id(vm_id, InstanceKind.OFFBOARD)


def role_assignment_name(
    scope: KeyResourceId | ScopeId | str, role_definition: RoleDefinitionId | str, principal_id: str
) -> str:
    """uuid5 over (scope, role GUID, principal): a retry PUTs the same assignment instead of a duplicate.

    The role is identified by its GUID, because a built-in role read at different scopes has
    different ids but is one role (ARM would answer 409 RoleAssignmentExists to a second name).
    """
    scope_text = str(scope).strip().rstrip("/")
    if not scope_text.startswith("/"):
        raise NamingError(f"role assignment scope {scope_text!r} must be a resource id starting with '/'")
    role_guid = _role_guid(role_definition)
    if not _GUID.match(principal_id.strip()):
        raise NamingError(f"principal id {principal_id!r} must be a GUID (the identity's object id)")
    name = f"{scope_text.lower()}|{role_guid}|{principal_id.strip().lower()}"
    return str(uuid.uuid5(ROLE_ASSIGNMENT_NAMESPACE, name))


def _role_guid(role_definition: RoleDefinitionId | str) -> str:
    if isinstance(role_definition, RoleDefinitionId):
        return role_definition.guid
    text = role_definition.strip()
    if _GUID.match(text):
        return text.lower()
    return RoleDefinitionId.parse(text).guid


def run_command_name(vm_id: VmResourceId, attempt: int) -> str:
    """Managed run-command name per (VM, attempt): a replayed activity re-PUTs, a new attempt runs anew."""
    if attempt < 1:
        raise NamingError(f"run command attempt must be >= 1, got {attempt}")
    return f"skr-release-{attempt:03d}-{_digest(str(vm_id), str(attempt), length=10)}"


def validate_key_name(name: str) -> str:
    """Key Vault's rule: 1-127 letters, digits and dashes."""
    if _KEY_NAME.match(name):
        return name
    if not name:
        raise NamingError("key name is empty; Key Vault needs 1-127 letters, digits and dashes")
    if len(name) > KEY_NAME_MAX_LENGTH:
        raise NamingError(f"key name {name[:40]!r}... is {len(name)} characters; Key Vault allows at most 127")
    bad = sorted({ch for ch in name if not (ch.isascii() and (ch.isalnum() or ch == "-"))})
    raise NamingError(
        f"key name {name!r} contains {', '.join(repr(ch) for ch in bad)}; "
        "Key Vault allows only letters, digits and dashes"
    )


def validate_key_name_template(template: str) -> str:
    """Reject unknown placeholders and characters Key Vault would refuse, before any VM is seen."""
    allowed = ", ".join("{" + p + "}" for p in KEY_NAME_PLACEHOLDERS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise NamingError(f"key name template {template!r} is malformed ({exc}); placeholders: {allowed}") from exc
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in KEY_NAME_PLACEHOLDERS:
            raise NamingError(
                f"key name template {template!r} uses unknown placeholder {{{field}}}; allowed: {allowed}"
            )
        if spec or conversion:
            raise NamingError(
                f"key name template {template!r}: placeholder {{{field}}} takes no format spec or conversion"
            )
    sample = template.format(vm_name="vm", resource_group="rg", subscription_id="0" * 8)
    try:
        validate_key_name(sample)
    except NamingError as exc:
        raise NamingError(f"key name template {template!r} cannot give a valid key name: {exc}") from exc
    return template


def render_key_name(template: str, vm_id: VmResourceId) -> str:
    """The per-VM key name; a VM whose name Key Vault would refuse gets an error naming the VM."""
    validate_key_name_template(template)
    name = template.format(
        vm_name=vm_id.name, resource_group=vm_id.resource_group, subscription_id=vm_id.subscription_id
    )
    try:
        return validate_key_name(name)
    except NamingError as exc:
        raise NamingError(f"template {template!r} gives an invalid key name for VM {vm_id}: {exc}") from exc
