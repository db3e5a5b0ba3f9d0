"""The tag filter (SKR_TAG_FILTER) and SKR_DISABLE_KEY_ON_OFFBOARD on their own stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from localdev.stack import Stack, start_stack
from localdev.twin.core import TwinConfig
from tests.e2e.helpers import assignments_of, onboard

TAG = {"skr": "on"}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    config = TwinConfig(propagation="fixed:15", seed=5)
    settings = {"SKR_TAG_FILTER": "skr=on", "SKR_DISABLE_KEY_ON_OFFBOARD": "true"}
    with start_stack(twin_config=config, settings=settings) as running:
        yield running


def test_vm_without_the_filter_tag_is_skipped_and_gets_no_grant(stack: Stack) -> None:
    vm, result = onboard(stack, "cvm-untagged")
    assert result["outcome"] == "skipped" and result["skip_reason"] == "tag_filter_mismatch"
    assert assignments_of(stack, vm) == []


def test_tagged_vm_is_released_and_its_own_key_disabled_on_offboard(stack: Stack) -> None:
    vm, result = onboard(stack, "cvm-tagged", tags=TAG)
    assert result["outcome"] == "released", result["detail"]
    stack.twin.delete_vm(vm.resource_id)
    off = stack.wait_for_offboarding(vm)
    assert off.output["key_disabled"] is True
    assert not stack.twin.vault().keys[result["key"]["name"].lower()].latest.enabled
    assert [e["type"] for e in _published(stack, vm.resource_id)][-1] == "SkrOrchestrator.Offboarding.Completed"


def test_a_shared_key_is_never_disabled_on_offboard(stack: Stack) -> None:
    tags = {**TAG, "skr-key": "group-key"}
    first, one = onboard(stack, "cvm-shared-1", tags=tags)
    second, two = onboard(stack, "cvm-shared-2", tags=tags)
    assert one["key"]["name"] == two["key"]["name"] == "group-key" and one["key"]["shared"]
    stack.twin.delete_vm(first.resource_id)
    off = stack.wait_for_offboarding(first)
    assert off.output["key_disabled"] is False
    assert stack.twin.vault().keys["group-key"].latest.enabled
    assert assignments_of(stack, first) == [] and len(assignments_of(stack, second)) == 1


def _published(stack: Stack, subject: str) -> list[dict[str, Any]]:
    return [r["event"] for r in stack.twin.events.published if r["event"].get("subject") == subject]
