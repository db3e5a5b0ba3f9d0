"""Shared records of the twin's world: principals and simulated VMs.

Every twin module reads and writes these; extend by adding fields with defaults, never by renaming.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric import rsa


class TeeProfile(StrEnum):
    """What a simulated VM proves when it attests."""

    COMPLIANT_CVM = "compliant_cvm"  # SEV-SNP CVM, x-ms-compliance-status = azure-compliant-cvm
    NONCOMPLIANT_CVM = "noncompliant_cvm"  # SEV-SNP CVM whose compliance status is not compliant
    TRUSTED_LAUNCH = "trusted_launch"  # securityType TrustedLaunch, no SEV-SNP isolation claims
    PLAIN = "plain"  # no securityProfile at all

    @property
    def security_type(self) -> str | None:
        return {
            TeeProfile.COMPLIANT_CVM: "ConfidentialVM",
            TeeProfile.NONCOMPLIANT_CVM: "ConfidentialVM",
            TeeProfile.TRUSTED_LAUNCH: "TrustedLaunch",
            TeeProfile.PLAIN: None,
        }[self]


@dataclass
class Principal:
    """An Entra object (the app's identity, a VM's system-assigned identity, a test user)."""

    object_id: str
    display_name: str
    principal_type: str = "ServicePrincipal"
    # Virtual epoch seconds when it was created: ARM reports PrincipalNotFound until Entra has
    # replicated it (created_at + replication window), unless principalType is given.
    created_at: float = 0.0
    vm_resource_id: str | None = None
    app_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # client id (appid claim)
    deleted: bool = False  # left the directory (e.g. its VM was deleted)


@dataclass
class SimVm:
    """A simulated Azure VM with its TEE, identity and virtual vTPM."""

    # as created, e.g. /subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/n
    resource_id: str
    name: str
    resource_group: str
    subscription_id: str
    location: str = "westeurope"
    tee: TeeProfile = TeeProfile.COMPLIANT_CVM
    os_type: str = "Linux"  # or "Windows"
    principal_id: str | None = None  # system-assigned identity object id; None = no identity
    tags: dict[str, str] = field(default_factory=dict)
    vm_id: str = field(default_factory=lambda: str(uuid.uuid4()))  # properties.vmId
    provisioning_state: str = "Succeeded"
    vm_size: str = "Standard_DC2as_v5"
    power_state: str = "running"
    created_at: float = 0.0
    deleted: bool = False
    # The vTPM-resident TpmEphemeralEncryptionKey: MAA puts its public part in x-ms-runtime.keys,
    # Key Vault wraps released keys to it, only the VM's own tools hold the private part.
    vtpm_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), repr=False
    )

    @property
    def key(self) -> str:
        """Case-insensitive lookup key (ARM resource ids compare case-insensitively)."""
        return self.resource_id.lower()


@dataclass
class KeyVersion:
    """One version of a Key Vault key, with its private material (the twin is the HSM)."""

    vault_name: str
    name: str
    version: str  # 32 hex chars
    kty: str  # "RSA-HSM" or "EC-HSM" (or their software forms when a test asks)
    private_key: object = field(repr=False)  # rsa.RSAPrivateKey or ec.EllipticCurvePrivateKey
    key_ops: list[str] = field(default_factory=list)
    exportable: bool = False
    release_policy: bytes | None = None  # raw policy JSON as stored (decoded from base64url)
    release_policy_content_type: str = "application/json; charset=utf-8"
    immutable_policy: bool = False
    enabled: bool = True
    created: float = 0.0
    updated: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)
    curve: str | None = None
    nbf: float | None = None  # attributes.nbf (Unix seconds)
    exp: float | None = None  # attributes.exp (Unix seconds)


@dataclass
class StoredKey:
    """A key name in a vault: its versions in creation order and its soft-delete state."""

    name: str
    versions: list[KeyVersion] = field(default_factory=list)
    deleted: bool = False
    deleted_at: float | None = None

    @property
    def latest(self) -> KeyVersion:
        return self.versions[-1]


@dataclass
class Vault:
    """A Key Vault (RBAC permission model); ``url`` is set when its listener starts."""

    name: str
    resource_id: str
    sku: str = "premium"
    url: str = ""
    location: str = "westeurope"
    keys: dict[str, StoredKey] = field(default_factory=dict)  # lower-case name -> key
