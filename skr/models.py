"""Cross-boundary contracts (DESIGN §3): every value Durable history stores is one of these.

Resource ids are parsed once at the edge and carried as typed values: ARM compares them
case-insensitively, so equality and hashing here do too, while ``str()`` keeps a canonical form
(fixed segments in ARM's casing, GUIDs lower-case, names as given).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

# ---------------------------------------------------------------------------------------------
# Resource ids
# ---------------------------------------------------------------------------------------------

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RESOURCE_GROUP = re.compile(r"^[-\w.()]{1,90}$")
_VM_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,63}$")
_VAULT_NAME = re.compile(r"^[A-Za-z][-A-Za-z0-9]{1,22}[A-Za-z0-9]$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9-]{1,127}$")


class ResourceIdError(ValueError):
    """A resource id that does not parse; the message names the offending segment."""


def _segments(kind: str, value: object) -> list[str]:
    if not isinstance(value, str):
        raise ResourceIdError(f"{kind} must be a string, got {type(value).__name__}")
    text = value.strip()
    if not text.startswith("/"):
        raise ResourceIdError(f"{kind} {value!r} must start with '/'")
    parts = text.rstrip("/").split("/")[1:]
    if any(part == "" for part in parts):
        raise ResourceIdError(f"{kind} {value!r} has an empty segment ('//')")
    return parts


def _expect(kind: str, value: str, parts: list[str], index: int, literal: str) -> None:
    if index >= len(parts):
        raise ResourceIdError(f"{kind} {value!r} is truncated: expected segment {literal!r} at position {index + 1}")
    if parts[index].lower() != literal.lower():
        raise ResourceIdError(f"{kind} {value!r}: segment {index + 1} should be {literal!r}, got {parts[index]!r}")


def _check(kind: str, value: str, what: str, segment: str, pattern: re.Pattern[str]) -> str:
    if not pattern.match(segment):
        raise ResourceIdError(f"{kind} {value!r}: invalid {what} {segment!r}")
    return segment


def _check_guid(kind: str, value: str, what: str, segment: str) -> str:
    return _check(kind, value, what, segment, _GUID).lower()


class _ResourceId(BaseModel):
    """Base for typed ids: parses from a string, serialises to its canonical string."""

    model_config = ConfigDict(frozen=True)
    kind: ClassVar[str] = "resource id"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            return cls._fields_from(data)
        return data

    @classmethod
    def _fields_from(cls, value: str) -> dict[str, str]:
        raise NotImplementedError

    @classmethod
    def parse(cls, value: str) -> Self:
        """Parse a resource id string; raises ResourceIdError naming the bad segment."""
        return cls.model_validate(cls._fields_from(value))

    @model_serializer
    def _serialise(self) -> str:
        return str(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _ResourceId):
            return type(self) is type(other) and str(self).lower() == str(other).lower()
        return NotImplemented

    def __hash__(self) -> int:
        return hash((type(self).__name__, str(self).lower()))

    def __str__(self) -> str:
        raise NotImplementedError


class ScopeId(_ResourceId):
    """A subscription or resource-group scope (what SKR_SCOPES lists)."""

    kind: ClassVar[str] = "scope"
    subscription_id: str
    resource_group: str | None = None

    @classmethod
    def _fields_from(cls, value: str) -> dict[str, str]:
        parts = _segments(cls.kind, value)
        _expect(cls.kind, value, parts, 0, "subscriptions")
        if len(parts) < 2:
            raise ResourceIdError(f"{cls.kind} {value!r} is truncated: missing the subscription id")
        fields = {"subscription_id": _check_guid(cls.kind, value, "subscription id", parts[1])}
        if len(parts) == 2:
            return fields
        _expect(cls.kind, value, parts, 2, "resourceGroups")
        if len(parts) != 4:
            raise ResourceIdError(
                f"{cls.kind} {value!r} must be /subscriptions/{{id}} or /subscriptions/{{id}}/resourceGroups/{{name}}"
            )
        fields["resource_group"] = _check(cls.kind, value, "resource group name", parts[3], _RESOURCE_GROUP)
        return fields

    def __str__(self) -> str:
        base = f"/subscriptions/{self.subscription_id}"
        return f"{base}/resourceGroups/{self.resource_group}" if self.resource_group else base

    def contains(self, resource: VmResourceId | VaultResourceId) -> bool:
        """True when ``resource`` lives inside this scope (case-insensitive, as ARM compares)."""
        if resource.subscription_id.lower() != self.subscription_id.lower():
            return False
        return self.resource_group is None or self.resource_group.lower() == resource.resource_group.lower()


class _ProviderResourceId(_ResourceId):
    """A top-level resource in a resource group: /subscriptions/…/resourceGroups/…/providers/NS/TYPE/NAME."""

    namespace: ClassVar[str]
    resource_type: ClassVar[str]
    name_what: ClassVar[str]
    name_pattern: ClassVar[re.Pattern[str]]
    subscription_id: str
    resource_group: str
    name: str

    @classmethod
    def _fields_from(cls, value: str) -> dict[str, str]:
        parts = _segments(cls.kind, value)
        for index, literal in (
            (0, "subscriptions"),
            (2, "resourceGroups"),
            (4, "providers"),
            (5, cls.namespace),
            (6, cls.resource_type),
        ):
            _expect(cls.kind, value, parts, index, literal)
        if len(parts) != 8:
            raise ResourceIdError(
                f"{cls.kind} {value!r} must have exactly 8 segments (/subscriptions/{{id}}/resourceGroups/{{rg}}"
                f"/providers/{cls.namespace}/{cls.resource_type}/{{name}}), got {len(parts)}"
            )
        return {
            "subscription_id": _check_guid(cls.kind, value, "subscription id", parts[1]),
            "resource_group": _check(cls.kind, value, "resource group name", parts[3], _RESOURCE_GROUP),
            "name": _check(cls.kind, value, cls.name_what, parts[7], cls.name_pattern),
        }

    def __str__(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{self.namespace}/{self.resource_type}/{self.name}"
        )


class VmResourceId(_ProviderResourceId):
    kind: ClassVar[str] = "VM resource id"
    namespace: ClassVar[str] = "Microsoft.Compute"
    resource_type: ClassVar[str] = "virtualMachines"
    name_what: ClassVar[str] = "VM name"
    name_pattern: ClassVar[re.Pattern[str]] = _VM_NAME


class VaultResourceId(_ProviderResourceId):
    kind: ClassVar[str] = "Key Vault resource id"
    namespace: ClassVar[str] = "Microsoft.KeyVault"
    resource_type: ClassVar[str] = "vaults"
    name_what: ClassVar[str] = "vault name"
    name_pattern: ClassVar[re.Pattern[str]] = _VAULT_NAME

    def key(self, key_name: str) -> KeyResourceId:
        return KeyResourceId(vault=self, key_name=key_name)


class KeyResourceId(_ResourceId):
    """The ARM id of a key: the scope the release role is assigned at."""

    kind: ClassVar[str] = "key resource id"
    vault: VaultResourceId
    key_name: str

    @classmethod
    def _fields_from(cls, value: str) -> dict[str, Any]:
        parts = _segments(cls.kind, value)
        if len(parts) != 10:
            raise ResourceIdError(f"{cls.kind} {value!r} must be a vault id followed by /keys/{{name}}")
        _expect(cls.kind, value, parts, 8, "keys")
        vault = VaultResourceId.parse("/" + "/".join(parts[:8]))
        return {"vault": vault, "key_name": _check(cls.kind, value, "key name", parts[9], _KEY_NAME)}

    @field_validator("key_name")
    @classmethod
    def _valid_key_name(cls, name: str) -> str:
        if not _KEY_NAME.match(name):
            raise ResourceIdError(f"invalid key name {name!r}: 1-127 letters, digits and dashes")
        return name

    def __str__(self) -> str:
        return f"{self.vault}/keys/{self.key_name}"


_ROLE_SCOPE_SUFFIX = "/providers/Microsoft.Authorization/"


def _split_authorization_id(kind: str, value: object, collection: str) -> tuple[str, str]:
    """Split '{scope}/providers/Microsoft.Authorization/{collection}/{guid}' into (scope, guid)."""
    parts = _segments(kind, value)
    text = "/" + "/".join(parts)
    marker = f"{_ROLE_SCOPE_SUFFIX}{collection}/".lower()
    at = text.lower().rfind(marker)
    if at < 0:
        raise ResourceIdError(
            f"{kind} {value!r}: expected '.../providers/Microsoft.Authorization/{collection}/{{guid}}'"
        )
    scope = text[:at] or "/"
    name = text[at + len(marker) :]
    if "/" in name:
        raise ResourceIdError(f"{kind} {value!r}: unexpected segments after the {collection} name")
    return scope, _check_guid(kind, str(value), f"{collection} name", name)


class RoleDefinitionId(_ResourceId):
    kind: ClassVar[str] = "role definition id"
    scope: str  # "/" for tenant-level built-ins, else the scope it was read at
    guid: str

    @classmethod
    def _fields_from(cls, value: str) -> dict[str, str]:
        scope, guid = _split_authorization_id(cls.kind, value, "roleDefinitions")
        return {"scope": scope, "guid": guid}

    def __str__(self) -> str:
        prefix = "" if self.scope == "/" else self.scope
        return f"{prefix}/providers/Microsoft.Authorization/roleDefinitions/{self.guid}"

    def same_role(self, other: RoleDefinitionId) -> bool:
        """Built-ins are one role whatever scope they were read at: compare GUIDs."""
        return self.guid == other.guid

    @classmethod
    def at_subscription(cls, subscription_id: str, guid: str) -> RoleDefinitionId:
        return cls.parse(f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{guid}")


class RoleAssignmentId(_ResourceId):
    kind: ClassVar[str] = "role assignment id"
    scope: str
    guid: str

    @classmethod
    def _fields_from(cls, value: str) -> dict[str, str]:
        scope, guid = _split_authorization_id(cls.kind, value, "roleAssignments")
        return {"scope": scope, "guid": guid}

    def __str__(self) -> str:
        return f"{self.scope}/providers/Microsoft.Authorization/roleAssignments/{self.guid}"


# ---------------------------------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------------------------------


class Stage(StrEnum):
    """Where an onboarding (or offboarding) instance is; shown in custom status."""

    INSPECTING_VM = "inspecting_vm"
    ENSURING_KEY = "ensuring_key"
    ENSURING_ROLE = "ensuring_role"
    ASSIGNING_ROLE = "assigning_role"
    WAITING_FOR_RBAC = "waiting_for_rbac"
    RELEASING = "releasing"
    REPORTING = "reporting"
    COMPLETED = "completed"
    REMOVING_ASSIGNMENT = "removing_assignment"
    DISABLING_KEY = "disabling_key"
    RECONCILING = "reconciling"


class Outcome(StrEnum):
    RELEASED = "released"
    SKIPPED = "skipped"
    FAILED = "failed"


class FailureCode(StrEnum):
    """Classified reasons an onboarding failed (DESIGN §3) or an Azure call was refused (§7)."""

    NO_MANAGED_IDENTITY = "no_managed_identity"
    VM_NOT_FOUND = "vm_not_found"
    VM_DELETED = "vm_deleted"
    VM_NOT_READY = "vm_not_ready"
    POLICY_DENIED = "policy_denied"
    ATTESTATION_FAILED = "attestation_failed"
    RBAC_PROPAGATION_TIMEOUT = "rbac_propagation_timeout"
    NOT_AUTHORIZED = "not_authorized"
    RUN_COMMAND_FAILED = "run_command_failed"
    RUN_COMMAND_TIMEOUT = "run_command_timeout"
    RUN_COMMAND_CONFLICT = "run_command_conflict"
    KEY_POLICY_MISMATCH = "key_policy_mismatch"
    KEY_NOT_FOUND = "key_not_found"
    KEY_DELETED = "key_deleted"
    NOT_EXPORTABLE = "not_exportable"
    IMDS_FAILED = "imds_failed"
    PRINCIPAL_NOT_FOUND = "principal_not_found"
    FORBIDDEN_BY_RBAC = "forbidden_by_rbac"
    THROTTLED = "throttled"
    TRANSIENT = "transient"
    CONFLICT = "conflict"
    INVALID_REQUEST = "invalid_request"
    HTTP_ERROR = "http_error"
    INTERNAL_ERROR = "internal_error"
    ROLE_NOT_FOUND = "role_not_found"
    ASSIGNMENT_NOT_FOUND = "assignment_not_found"
    QUOTA_EXCEEDED = "quota_exceeded"


class SkipReason(StrEnum):
    NOT_CONFIDENTIAL_VM = "not_confidential_vm"
    OUT_OF_SCOPE = "out_of_scope"
    TAG_FILTER_MISMATCH = "tag_filter_mismatch"


class ReleaseOutcome(StrEnum):
    """The in-VM script's outcomes (vm_scripts/README.md)."""

    RELEASED = "released"
    FORBIDDEN_BY_RBAC = "forbidden_by_rbac"
    POLICY_DENIED = "policy_denied"
    ATTESTATION_FAILED = "attestation_failed"
    KEY_NOT_FOUND = "key_not_found"
    NOT_EXPORTABLE = "not_exportable"
    IMDS_FAILED = "imds_failed"
    HTTP_ERROR = "http_error"
    JWS_INVALID = "jws_invalid"  # the release response failed verification inside the VM
    INVALID_PARAMETERS = "invalid_parameters"  # the run command passed a bad parameter
    INTERNAL_ERROR = "internal_error"  # the script failed unexpectedly


class TriggerSource(StrEnum):
    EVENT = "event"
    HTTP = "http"
    RECONCILE = "reconcile"
    RETRY = "retry"


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


class _Record(BaseModel):
    """Strict JSON records: unknown fields are a bug at a boundary we own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> dict[str, Any]:
        """The JSON dict Durable history stores."""
        return self.model_dump(mode="json", exclude_none=False)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return cls.model_validate(data)


class OnboardingRequest(_Record):
    vm_id: VmResourceId
    source: TriggerSource = TriggerSource.HTTP
    key_name: str | None = Field(default=None, description="override the key chosen by tag or template")
    correlation_id: str | None = Field(default=None, max_length=128)

    @field_validator("key_name")
    @classmethod
    def _valid_key_name(cls, name: str | None) -> str | None:
        if name is not None and not _KEY_NAME.match(name):
            raise ValueError(f"invalid key name {name!r}: 1-127 letters, digits and dashes")
        return name


class VmFacts(_Record):
    """What inspecting a VM tells the orchestrator (no secrets, small)."""

    vm_id: VmResourceId
    unique_id: str | None = None  # properties.vmId
    location: str | None = None
    security_type: str | None = None
    principal_id: str | None = None
    tenant_id: str | None = None
    os_type: str | None = None
    provisioning_state: str | None = None
    power_state: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def is_confidential(self) -> bool:
        return (self.security_type or "").lower() == "confidentialvm"


class KeyRef(_Record):
    vault_url: str
    name: str
    version: str | None = None
    key_type: str | None = None
    resource_id: KeyResourceId | None = None  # the RBAC scope
    created: bool = False  # this onboarding created the key (or its new version)
    shared: bool = False  # chosen by VM tag, shared by a group of VMs

    @field_validator("vault_url")
    @classmethod
    def _https_vault(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.netloc:
            raise ValueError(f"vault URL must be https://..., got {url!r}")
        return f"https://{parts.netloc}"

    @property
    def kid(self) -> str:
        suffix = f"/{self.version}" if self.version else ""
        return f"{self.vault_url}/keys/{self.name}{suffix}"


class RoleRef(_Record):
    role_definition_id: RoleDefinitionId
    role_name: str
    custom: bool = False


class AssignmentRef(_Record):
    assignment_id: RoleAssignmentId
    scope: str
    principal_id: str
    role_definition_id: RoleDefinitionId
    created: bool = False  # this call created it (False: it already existed)
    created_on: datetime | None = None


class ReleaseReport(BaseModel):
    """The parsed `SKR-RESULT` line the in-VM script prints (vm_scripts/README.md); no secrets."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    outcome: ReleaseOutcome
    key_id: str | None = None
    key_thumbprint: str | None = None
    http_status: int | None = None
    error_code: str | None = None
    attempts: int = 0
    elapsed_seconds: float = 0.0
    detail: str | None = Field(default=None, max_length=512)
    exit_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class CustomStatus(_Record):
    """What `GET status` shows while an instance runs: small and secret-free."""

    stage: Stage
    attempt: int = 0
    since: datetime
    detail: str | None = Field(default=None, max_length=512)
    seconds_since_assignment: float | None = None


class OnboardingResult(_Record):
    """Orchestration output of `onboard_cvm`."""

    vm_id: VmResourceId
    outcome: Outcome
    failure_code: FailureCode | None = None
    skip_reason: SkipReason | None = None
    detail: str | None = Field(default=None, max_length=1024)
    unique_vm_id: str | None = None
    principal_id: str | None = None
    key: KeyRef | None = None
    role: RoleRef | None = None
    assignment: AssignmentRef | None = None
    stage_times: dict[Stage, datetime] = Field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    assignment_created_at: datetime | None = None
    released_at: datetime | None = None
    propagation_seconds: float | None = None
    release_attempts: int = 0
    report: ReleaseReport | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.outcome is Outcome.FAILED and self.failure_code is None:
            raise ValueError("a failed onboarding needs a failure_code")
        if self.outcome is Outcome.SKIPPED and self.skip_reason is None:
            raise ValueError("a skipped onboarding needs a skip_reason")
        if self.outcome is Outcome.RELEASED and (self.failure_code or self.skip_reason):
            raise ValueError("a released onboarding carries neither failure_code nor skip_reason")
        return self


class OffboardingRequest(_Record):
    vm_id: VmResourceId
    principal_id: str | None = None
    assignment_ids: list[RoleAssignmentId] = Field(default_factory=list)
    key: KeyRef | None = None
    disable_key: bool = False
    source: TriggerSource = TriggerSource.EVENT


class OffboardingResult(_Record):
    vm_id: VmResourceId
    removed_assignments: list[RoleAssignmentId] = Field(default_factory=list)
    already_absent: list[RoleAssignmentId] = Field(default_factory=list)
    key_disabled: bool = False
    detail: str | None = Field(default=None, max_length=1024)
