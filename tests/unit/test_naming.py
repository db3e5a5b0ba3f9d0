"""Deterministic names: instance ids, assignment GUIDs, run-command names, key names."""

from __future__ import annotations

import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skr.models import KeyResourceId, RoleDefinitionId, ScopeId, VmResourceId
from skr.naming import (
    INSTANCE_ID_MAX_LENGTH,
    ROLE_ASSIGNMENT_NAMESPACE,
    InstanceKind,
    NamingError,
    instance_id,
    offboarding_instance_id,
    onboarding_instance_id,
    render_key_name,
    role_assignment_name,
    run_command_name,
    validate_key_name,
    validate_key_name_template,
)

SUB = "6f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
VM = VmResourceId.parse(
    f"/subscriptions/{SUB}/resourceGroups/rg-cvm/providers/Microsoft.Compute/virtualMachines/cvm-01"
)
PRINCIPAL = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
RELEASE_ROLE = "08bbd89e-9f13-488c-ac41-acfcb10c90ab"
KEY_SCOPE = f"/subscriptions/{SUB}/resourceGroups/rg-kv/providers/Microsoft.KeyVault/vaults/kv-skr/keys/cvm-cvm-01"
LEGAL_INSTANCE_ID = re.compile(r"^[a-z0-9-]+$")

vm_names = st.from_regex(r"\A[A-Za-z0-9][-A-Za-z0-9_.]{0,63}\Z")


def vm(name: str, rg: str = "rg-cvm", sub: str = SUB) -> VmResourceId:
    return VmResourceId.parse(
        f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}"
    )


# --- instance ids --------------------------------------------------------------------------------


def test_instance_id_is_readable_and_deterministic() -> None:
    onboard = onboarding_instance_id(VM)
    assert re.fullmatch(r"onboard-cvm-01-[0-9a-f]{16}", onboard)
    assert onboard == onboarding_instance_id(VmResourceId.parse(str(VM)))
    offboard = offboarding_instance_id(VM)
    assert offboard == instance_id(VM, InstanceKind.OFFBOARD)
    assert offboard.startswith("offboard-cvm-01-") and offboard.split("-")[-1] == onboard.split("-")[-1]


def test_instance_id_ignores_resource_id_casing() -> None:
    upper = VmResourceId.parse(str(VM).upper().replace("SUBSCRIPTIONS", "subscriptions"))
    assert onboarding_instance_id(upper) == onboarding_instance_id(VM)


def test_instance_ids_differ_per_vm_even_with_equal_names() -> None:
    ids = {onboarding_instance_id(vm("cvm-01", rg=rg)) for rg in ("a", "b", "c")}
    ids.add(onboarding_instance_id(vm("cvm-01", sub="00000000-0000-0000-0000-000000000001")))
    assert len(ids) == 4


@given(vm_names, st.sampled_from(list(InstanceKind)))
def test_instance_ids_are_legal_and_bounded(name: str, kind: InstanceKind) -> None:
    value = instance_id(vm(name), kind)
    assert len(value) <= INSTANCE_ID_MAX_LENGTH
    assert LEGAL_INSTANCE_ID.match(value), value
    assert value.startswith(f"{kind.value}-") and "--" not in value.removeprefix(f"{kind.value}-")


def test_name_without_letters_or_digits_still_gets_a_prefix() -> None:
    assert re.fullmatch(r"onboard-a-[0-9a-f]{16}", onboarding_instance_id(vm("A")))
    assert re.fullmatch(r"onboard-vm-[0-9a-f]{16}", onboarding_instance_id(vm("0").model_copy(update={"name": "__"})))


# --- role assignment names -----------------------------------------------------------------------


def test_assignment_name_is_uuid5_over_lowercased_scope_role_and_principal() -> None:
    name = role_assignment_name(KEY_SCOPE, RELEASE_ROLE, PRINCIPAL)
    expected = uuid.uuid5(ROLE_ASSIGNMENT_NAMESPACE, f"{KEY_SCOPE.lower()}|{RELEASE_ROLE}|{PRINCIPAL}")
    assert name == str(expected)
    assert uuid.UUID(name).version == 5


def test_assignment_name_is_stable_across_input_forms() -> None:
    base = role_assignment_name(KEY_SCOPE, RELEASE_ROLE, PRINCIPAL)
    role_at_sub = RoleDefinitionId.at_subscription(SUB, RELEASE_ROLE)
    role_builtin = RoleDefinitionId.parse(f"/providers/Microsoft.Authorization/roleDefinitions/{RELEASE_ROLE.upper()}")
    assert role_assignment_name(KEY_SCOPE.upper(), role_at_sub, PRINCIPAL.upper()) == base
    assert role_assignment_name(KEY_SCOPE + "/", role_builtin, PRINCIPAL) == base
    assert role_assignment_name(KeyResourceId.parse(KEY_SCOPE), str(role_at_sub), PRINCIPAL) == base


def test_assignment_name_changes_with_each_input() -> None:
    base = role_assignment_name(KEY_SCOPE, RELEASE_ROLE, PRINCIPAL)
    other_principal = "1a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    others = {
        role_assignment_name(KEY_SCOPE.replace("cvm-cvm-01", "cvm-cvm-02"), RELEASE_ROLE, PRINCIPAL),
        role_assignment_name(KEY_SCOPE, "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", PRINCIPAL),
        role_assignment_name(KEY_SCOPE, RELEASE_ROLE, other_principal),
        role_assignment_name(ScopeId.parse(f"/subscriptions/{SUB}"), RELEASE_ROLE, PRINCIPAL),
    }
    assert base not in others and len(others) == 4


@pytest.mark.parametrize(
    ("scope", "role", "principal", "message"),
    [
        ("subscriptions/x", RELEASE_ROLE, PRINCIPAL, "must be a resource id"),
        (KEY_SCOPE, RELEASE_ROLE, "not-a-guid", "must be a GUID"),
        (KEY_SCOPE, "/providers/Microsoft.Authorization/roleDefinitions/nope", PRINCIPAL, "roleDefinitions name"),
    ],
)
def test_assignment_name_rejects_bad_input(scope: str, role: str, principal: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        role_assignment_name(scope, role, principal)


# --- run command names ---------------------------------------------------------------------------


def test_run_command_name_per_vm_and_attempt() -> None:
    first = run_command_name(VM, 1)
    assert re.fullmatch(r"skr-release-001-[0-9a-f]{10}", first)
    assert first == run_command_name(vm("CVM-01", rg="RG-CVM"), 1)
    assert run_command_name(VM, 2) != first
    assert run_command_name(vm("cvm-02"), 1) != first
    with pytest.raises(NamingError, match=">= 1"):
        run_command_name(VM, 0)


# --- key names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("cvm-{vm_name}", "cvm-cvm-01"),
        ("{resource_group}-{vm_name}", "rg-cvm-cvm-01"),
        ("k-{subscription_id}", f"k-{SUB}"),
        ("shared-fleet-key", "shared-fleet-key"),
    ],
)
def test_render_key_name(template: str, expected: str) -> None:
    assert render_key_name(template, VM) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("cvm-{vm}", r"unknown placeholder \{vm\}; allowed: \{vm_name\}, \{resource_group\}, \{subscription_id\}"),
        ("cvm-{}", r"unknown placeholder \{\}"),
        ("cvm-{vm_name.upper}", "unknown placeholder"),
        ("cvm-{vm_name:>10}", "no format spec"),
        ("cvm-{vm_name!r}", "no format spec or conversion"),
        ("cvm-{vm_name", "malformed"),
        ("cvm_{vm_name}", "contains '_'"),
        ("", "empty"),
        ("x" * 126 + "{vm_name}", "at most 127"),
    ],
)
def test_bad_templates_are_rejected_up_front(template: str, message: str) -> None:
    with pytest.raises(NamingError, match=message):
        validate_key_name_template(template)


def test_a_vm_name_key_vault_refuses_gets_an_error_naming_the_vm() -> None:
    with pytest.raises(NamingError) as info:
        render_key_name("cvm-{vm_name}", vm("web_01.prod"))
    text = str(info.value)
    assert "cvm-web_01.prod" in text and "'.', '_'" in text and "virtualMachines/web_01.prod" in text


def test_validate_key_name() -> None:
    assert validate_key_name("A-1") == "A-1"
    assert validate_key_name("k" * 127) == "k" * 127
    for bad, message in (("", "empty"), ("k" * 128, "128 characters"), ("ключ", "contains"), ("a b", "' '")):
        with pytest.raises(NamingError, match=message):
            validate_key_name(bad)
