"""The propagation deadline, on a stack configured with a shorter one (SKR_PROPAGATION_DEADLINE_SECONDS)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localdev.stack import Stack, start_stack
from localdev.twin.core import TwinConfig
from skr.workflow.options import IN_VM_POLL_INTERVAL_SECONDS
from tests.e2e.helpers import assignments_of, epoch, onboard, propagation, published_for

DEADLINE = 300


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with start_stack(
        twin_config=TwinConfig(propagation="fixed:20", seed=11),
        settings={"SKR_PROPAGATION_DEADLINE_SECONDS": str(DEADLINE)},
    ) as running:
        yield running


def test_rbac_that_never_propagates_fails_at_the_deadline_within_one_poll(stack: Stack) -> None:
    with propagation(stack, "fixed:100000"):
        vm, result = onboard(stack, "cvm-never")
    assert result["outcome"] == "failed" and result["failure_code"] == "rbac_propagation_timeout"
    waited = epoch(result["finished_at"]) - epoch(result["assignment_created_at"])
    assert DEADLINE <= waited <= DEADLINE + IN_VM_POLL_INTERVAL_SECONDS
    assert result["release_attempts"] >= 3 and "forbidden_by_rbac" in result["detail"]
    assert len(assignments_of(stack, vm)) == 1  # the grant stays: a retry reuses it
    assert [e["type"] for e in published_for(stack, vm)] == ["SkrOrchestrator.Onboarding.Failed"]
    status = stack.host.get_status(stack.onboarding_id(vm))
    assert status is not None and status.custom_status["stage"] == "completed"


def test_propagation_within_the_deadline_still_releases(stack: Stack) -> None:
    with propagation(stack, f"fixed:{DEADLINE - 60}"):
        _, result = onboard(stack, "cvm-late")
    assert result["outcome"] == "released", result["detail"]
    assert result["propagation_seconds"] >= DEADLINE - 60
