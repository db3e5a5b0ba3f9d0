"""The configurable paths: the action run command (SKR_RUN_COMMAND_MODE=action) driving the
AzureAttestSKR tool (SKR_RELEASE_MODE=azureattestskr) instead of a managed command and REST calls."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localdev.stack import Stack, start_stack
from localdev.twin.core import TwinConfig
from localdev.twin.model import TeeProfile
from tests.e2e.helpers import assignments_of, onboard, propagation


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    settings = {"SKR_RUN_COMMAND_MODE": "action", "SKR_RELEASE_MODE": "azureattestskr"}
    with start_stack(twin_config=TwinConfig(propagation="fixed:30", seed=9), settings=settings) as running:
        yield running


def test_action_mode_with_the_attest_tool_releases_after_propagation(stack: Stack) -> None:
    with propagation(stack, "fixed:130"):
        vm, result = onboard(stack, "cvm-action")
    assert result["outcome"] == "released", result["detail"]
    assert result["release_attempts"] >= 2 and result["propagation_seconds"] >= 130
    assert len(assignments_of(stack, vm)) == 1
    action_calls = stack.twin.counters.get(
        service="arm", operation="Microsoft.Compute/virtualMachines/runCommand/action"
    )
    assert action_calls >= 2  # one POST per attempt, no managed run-command resources


def test_action_mode_reports_policy_denied(stack: Stack) -> None:
    _, result = onboard(stack, "cvm-action-denied", tee=TeeProfile.NONCOMPLIANT_CVM)
    assert result["outcome"] == "failed" and result["failure_code"] == "policy_denied", result["detail"]
    assert "x-ms-compliance-status" in result["detail"]
