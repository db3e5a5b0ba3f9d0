"""Per-twin service state kept outside the Twin object (one instance per twin, created lazily)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_state: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def attached(twin: Any, key: str, factory: Callable[[], T]) -> T:
    """The ``key`` state of ``twin``, built by ``factory`` on first use."""
    with _lock:
        slots = _state.setdefault(twin, {})
        if key not in slots:
            slots[key] = factory()
        value: T = slots[key]
        return value
