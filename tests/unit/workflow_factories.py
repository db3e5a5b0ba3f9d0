"""Small builders shared by the workflow unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from skr.models import (
    AssignmentRef,
    FailureCode,
    KeyRef,
    OnboardingResult,
    Outcome,
    RoleAssignmentId,
    RoleDefinitionId,
    ScopeId,
    SkipReason,
    VmFacts,
    VmResourceId,
)
from skr.naming import onboarding_instance_id, role_assignment_name
from skr.workflow.instances import InstanceSnapshot
from skr.workflow.scope import ScopeGuard

SUB = "00000000-0000-0000-0000-0000000000a1"
OTHER_SUB = "00000000-0000-0000-0000-0000000000b2"
VAULT = f"/subscriptions/{SUB}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv-skr"
ROLE = RoleDefinitionId.parse("/providers/Microsoft.Authorization/roleDefinitions/08bbd89e-9f13-488c-ac41-acfcb10c90ab")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def vm_id(name: str = "vm1", rg: str = "rg1", sub: str = SUB) -> VmResourceId:
    return VmResourceId.parse(
        f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
    )


def guard(*scopes: str, tag_name: str | None = None, tag_value: str | None = None) -> ScopeGuard:
    return ScopeGuard(
        scopes=tuple(ScopeId.parse(s) for s in (scopes or (f"/subscriptions/{SUB}",))),
        tag_name=tag_name,
        tag_value=tag_value,
    )


def principal(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


def facts(name: str = "vm1", *, n: int = 1, security: str | None = "ConfidentialVM", **extra: Any) -> VmFacts:
    values: dict[str, Any] = {
        "vm_id": vm_id(name),
        "unique_id": f"11111111-0000-0000-0000-{n:012d}",
        "security_type": security,
        "principal_id": principal(n),
        "provisioning_state": "Succeeded",
        "power_state": "running",
    }
    values.update(extra)
    return VmFacts(**values)


def key(name: str = "cvm-vm1", *, shared: bool = False) -> KeyRef:
    return KeyRef(
        vault_url="https://kv-skr.vault.azure.net",
        name=name,
        version="0123456789abcdef0123456789abcdef",
        resource_id=f"{VAULT}/keys/{name}",
        shared=shared,
    )


def assignment(principal_id: str, key_name: str = "cvm-vm1", *, ours: bool = True) -> AssignmentRef:
    scope = f"{VAULT}/keys/{key_name}"
    guid = role_assignment_name(scope, ROLE, principal_id) if ours else "99999999-9999-4999-8999-999999999999"
    return AssignmentRef(
        assignment_id=RoleAssignmentId.parse(f"{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}"),
        scope=scope,
        principal_id=principal_id,
        role_definition_id=ROLE,
        created=True,
    )


def result(
    f: VmFacts,
    outcome: Outcome = Outcome.RELEASED,
    *,
    code: FailureCode | None = None,
    skip: SkipReason | None = None,
    with_assignment: bool = True,
) -> OnboardingResult:
    k = key(f"cvm-{f.vm_id.name}")
    return OnboardingResult(
        vm_id=f.vm_id,
        outcome=outcome,
        failure_code=code,
        skip_reason=skip,
        unique_vm_id=f.unique_id,
        principal_id=f.principal_id,
        key=k,
        assignment=assignment(f.principal_id or principal(0), k.name) if with_assignment else None,
    )


def snapshot(
    vm: VmResourceId,
    status: str = "Completed",
    *,
    output: OnboardingResult | None = None,
    stage: str | None = None,
    created: datetime = T0,
    instance: str | None = None,
) -> InstanceSnapshot:
    return InstanceSnapshot(
        instance_id=instance or onboarding_instance_id(vm),
        name="onboard_cvm",
        runtime_status=status,
        created_time=created,
        last_updated_time=created + timedelta(seconds=5),
        custom_status=None if stage is None else {"stage": stage, "attempt": 0, "since": created.isoformat()},
        output=None if output is None else output.to_json(),
    )
