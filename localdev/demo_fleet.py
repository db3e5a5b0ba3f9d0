"""The demo's simulated fleet: a seeded, realistic mix of VMs and the outcome each must reach.

Same ``(size, seed)``, same fleet: names, resource groups, kinds, tags, creation times within the
burst and how many duplicate events each VM's creation raises.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum

from localdev.twin.model import TeeProfile

SHARED_KEY_TAG = "skr-key"
RESOURCE_GROUPS = ("rg-payments", "rg-analytics", "rg-ledger")
WORKLOADS = ("api", "db", "etl", "ml", "web", "batch", "cache", "ledger")


class VmKind(StrEnum):
    """The roles the demo fleet mixes (issue 7)."""

    COMPLIANT = "compliant_cvm"
    SHARED_KEY = "shared_key_cvm"  # compliant CVM in a group sharing one key by tag
    NONCOMPLIANT = "noncompliant_cvm"
    TRUSTED_LAUNCH = "trusted_launch_vm"
    NO_IDENTITY = "cvm_without_identity"

    @property
    def tee(self) -> TeeProfile:
        if self is VmKind.NONCOMPLIANT:
            return TeeProfile.NONCOMPLIANT_CVM
        if self is VmKind.TRUSTED_LAUNCH:
            return TeeProfile.TRUSTED_LAUNCH
        return TeeProfile.COMPLIANT_CVM

    @property
    def has_identity(self) -> bool:
        return self is not VmKind.NO_IDENTITY

    @property
    def expected(self) -> str:
        """The outcome the product must reach, as ``outcome`` or ``outcome/code``."""
        return {
            VmKind.COMPLIANT: "released",
            VmKind.SHARED_KEY: "released",
            VmKind.NONCOMPLIANT: "failed/policy_denied",
            VmKind.TRUSTED_LAUNCH: "skipped/not_confidential_vm",
            VmKind.NO_IDENTITY: "failed/no_managed_identity",
        }[self]


@dataclass(frozen=True)
class VmSpec:
    name: str
    resource_group: str
    kind: VmKind
    create_offset_s: float  # seconds after the burst starts that the VM is created
    duplicates: int  # extra deliveries of its creation event (at-least-once delivery)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def expected(self) -> str:
        return self.kind.expected


@dataclass(frozen=True)
class FleetSpec:
    seed: int
    vms: tuple[VmSpec, ...]
    shared_key: str | None  # the key the tagged group shares

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for vm in self.vms:
            out[vm.kind.value] = out.get(vm.kind.value, 0) + 1
        return out


def _composition(size: int) -> list[VmKind]:
    """At least one compliant CVM; the special cases as soon as the fleet is big enough."""
    specials = [VmKind.NONCOMPLIANT, VmKind.TRUSTED_LAUNCH, VmKind.NO_IDENTITY][: max(0, size - 1)]
    remaining = size - len(specials)
    group = max(2, round(size / 6)) if remaining >= 3 else 0
    return specials + [VmKind.SHARED_KEY] * group + [VmKind.COMPLIANT] * (remaining - group)


def build_fleet(
    size: int, seed: int, *, burst_seconds: float = 60.0, max_duplicates: int = 2, mixed: bool = True
) -> FleetSpec:
    """A fleet of ``size`` VMs created within ``burst_seconds``; each creation event is delivered
    1 to ``1 + max_duplicates`` times. ``mixed=False``: compliant CVMs only (benchmarks)."""
    if size < 1:
        raise ValueError(f"the fleet needs at least 1 VM, got {size}")
    if burst_seconds < 0 or max_duplicates < 0:
        raise ValueError("burst_seconds and max_duplicates must be non-negative")
    rng = random.Random(seed)
    kinds = _composition(size) if mixed else [VmKind.COMPLIANT] * size
    rng.shuffle(kinds)
    shared_key = f"cvm-group-{rng.choice(WORKLOADS)}" if VmKind.SHARED_KEY in kinds else None
    counters: dict[str, int] = {}
    vms: list[VmSpec] = []
    for kind in kinds:
        workload = rng.choice(WORKLOADS)
        prefix = "tlvm" if kind is VmKind.TRUSTED_LAUNCH else "cvm"
        stem = f"{prefix}-{workload}"
        counters[stem] = counters.get(stem, 0) + 1
        tags = {"workload": workload}
        if kind is VmKind.SHARED_KEY and shared_key is not None:
            tags[SHARED_KEY_TAG] = shared_key
        vms.append(
            VmSpec(
                name=f"{stem}-{counters[stem]:02d}",
                resource_group=rng.choice(RESOURCE_GROUPS),
                kind=kind,
                create_offset_s=round(rng.uniform(0.0, burst_seconds), 3),
                duplicates=rng.randint(0, max_duplicates),
                tags=tags,
            )
        )
    vms.sort(key=lambda vm: vm.create_offset_s)
    return FleetSpec(seed=seed, vms=tuple(vms), shared_key=shared_key)
