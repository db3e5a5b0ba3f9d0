from __future__ import annotations

import pytest
from pydantic import ValidationError

from skr.models import SkipReason
from skr.workflow.scope import ScopeGuard
from tests.unit.workflow_factories import OTHER_SUB, SUB, facts, guard, vm_id


def test_subscription_scope_contains_its_vms_in_any_casing() -> None:
    g = guard(f"/subscriptions/{SUB}")
    assert g.check_id(vm_id()) is None
    upper = vm_id(name="VM1", rg="RG1", sub=SUB.upper())
    assert g.check_id(upper) is None
    assert g.check_id(vm_id(sub=OTHER_SUB)) is SkipReason.OUT_OF_SCOPE


def test_resource_group_scope_excludes_other_groups() -> None:
    g = guard(f"/subscriptions/{SUB}/resourceGroups/RG1")
    assert g.check_id(vm_id(rg="rg1")) is None
    assert g.check_id(vm_id(rg="rg2")) is SkipReason.OUT_OF_SCOPE


def test_no_scopes_admit_nothing() -> None:
    assert ScopeGuard().check_id(vm_id()) is SkipReason.OUT_OF_SCOPE


def test_tag_filter_name_is_case_insensitive_value_is_not() -> None:
    g = guard(tag_name="skr-onboard", tag_value="yes")
    assert g.check_tags({"SKR-Onboard": "yes"}) is None
    assert g.check_tags({"skr-onboard": "YES"}) is SkipReason.TAG_FILTER_MISMATCH
    assert g.check_tags({}) is SkipReason.TAG_FILTER_MISMATCH
    presence = guard(tag_name="skr-onboard")
    assert presence.check_tags({"skr-onboard": "anything"}) is None


def test_tag_value_needs_a_name() -> None:
    with pytest.raises(ValidationError, match="needs a tag name"):
        ScopeGuard(tag_value="yes")


def test_check_facts_order_scope_then_tag_then_security_type() -> None:
    g = guard(f"/subscriptions/{SUB}/resourceGroups/rg1", tag_name="skr")
    outside = facts(security="TrustedLaunch").model_copy(update={"vm_id": vm_id(rg="other")})
    assert g.check_facts(outside) is SkipReason.OUT_OF_SCOPE
    assert g.check_facts(facts(security="TrustedLaunch")) is SkipReason.TAG_FILTER_MISMATCH
    assert g.check_facts(facts(security="TrustedLaunch", tags={"skr": "1"})) is SkipReason.NOT_CONFIDENTIAL_VM
    assert g.check_facts(facts(security=None, tags={"skr": "1"})) is SkipReason.NOT_CONFIDENTIAL_VM
    assert g.check_facts(facts(security="confidentialvm", tags={"skr": "1"})) is None


def test_describe_names_scopes_and_tag() -> None:
    text = guard(tag_name="skr", tag_value="on").describe()
    assert SUB in text and "skr=on" in text
