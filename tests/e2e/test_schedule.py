"""The reconcile timer on its schedule (SKR_RECONCILE_SCHEDULE), with the host firing timers on the clock."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from localdev.stack import RECONCILE_FUNCTION, Stack, start_stack
from localdev.twin.core import TwinConfig
from tests.e2e.helpers import input_of

SCHEDULE = "0 */5 * * * *"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with start_stack(
        twin_config=TwinConfig(propagation="fixed:10", seed=13),
        settings={"SKR_RECONCILE_SCHEDULE": SCHEDULE},
        timer_triggers=True,
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def replays_identically() -> Iterator[None]:
    """The timer keeps the host busy forever here, so there is no idle point to settle at;
    the test checks its own instance's replay instead."""
    yield


def test_the_scheduled_reconcile_onboards_a_cvm_whose_event_was_lost(stack: Stack) -> None:
    _, schedule = stack.host.registry.timers[RECONCILE_FUNCTION]
    stack.twin.events.drop_next(1)
    created = datetime.fromtimestamp(stack.now(), tz=UTC)
    vm = stack.twin.create_vm("cvm-scheduled")
    status = stack.wait_for_onboarding(vm)
    assert status.output["outcome"] == "released", status.output["detail"]
    assert input_of(status)["request"]["source"] == "reconcile"
    first_tick = schedule.next_after(created)
    assert status.created_time <= first_tick  # started by the first pass after the VM appeared
    assert status.created_time >= created
    stack.host.check_replay(status.instance_id)
