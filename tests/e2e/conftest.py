"""E2E fixtures: one twin + local host stack per module (virtual clock), with a secret ledger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.stack import Stack, start_stack
from localdev.twin.core import TwinConfig
from tests.e2e.helpers import replay_guard
from tests.e2e.support import Ledger


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack shared by one module's tests: each test works on its own VMs."""
    db = Path(tmp_path_factory.mktemp("durable")) / "store.sqlite"
    config = TwinConfig(propagation="uniform:5:90", seed=7)
    with start_stack(twin_config=config, db_path=db) as running:
        yield running


@pytest.fixture(scope="module")
def ledger(stack: Stack) -> Iterator[Ledger]:
    with Ledger(stack.twin).recording() as recording:
        yield recording


@pytest.fixture(autouse=True)
def replays_identically(stack: Stack) -> Iterator[None]:
    """After each test, every instance it finished replays to the same actions (no non-determinism)."""
    with replay_guard(stack):
        yield
