"""Fixtures for the local Durable host's own tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from localdev.host import LocalHost

FEATURES = "tests.host.apps.features:app"


@pytest.fixture
def host() -> Iterator[LocalHost]:
    with LocalHost(FEATURES) as running:
        yield running


@pytest.fixture
def token() -> str:
    """A unique key for module-level state of the sample app (tests run in parallel)."""
    return uuid.uuid4().hex
