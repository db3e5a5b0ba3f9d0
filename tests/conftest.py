"""Shared fixtures: an in-process Azure twin on free loopback ports, and a virtual clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from localdev.clock import Clock, VirtualClock
from localdev.twin.core import Twin, TwinConfig
from localdev.twin.testing import running_twin

# CI machines are shared and noisy: judge properties by their examples, never by wall-clock deadlines.
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A fresh discrete-event clock starting at the current wall-clock time."""
    return VirtualClock()


@pytest.fixture
def twin_factory() -> Iterator[Callable[..., Twin]]:
    """Start twins with custom settings: ``twin_factory(clock=..., **TwinConfig fields)``."""
    with ExitStack() as stack:

        def make(clock: Clock | None = None, **config: Any) -> Twin:
            return stack.enter_context(running_twin(TwinConfig(**config), clock))

        yield make


@pytest.fixture
def twin(twin_factory: Callable[..., Twin]) -> Twin:
    """A started twin with defaults (real clock, one premium vault, app identity with its roles)."""
    return twin_factory()


@pytest.fixture
def virtual_twin(twin_factory: Callable[..., Twin], virtual_clock: VirtualClock) -> Twin:
    """A started twin on ``virtual_clock`` (propagation delays and timers cost no real time)."""
    return twin_factory(clock=virtual_clock)
