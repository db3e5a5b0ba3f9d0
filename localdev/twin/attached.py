"""Per-twin state of service modules that the Twin class does not declare (created lazily).

Kept in the twin's own ``__dict__`` so it lives and dies with the twin (state that refers back to
the twin forms an ordinary, collectable cycle).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.RLock()
_SLOT = "_attached_state"


def attached(twin: Any, key: str, factory: Callable[[], T]) -> T:
    """The ``key`` state of ``twin``, built by ``factory`` on first use."""
    with _lock:
        slots: dict[str, Any] = twin.__dict__.setdefault(_SLOT, {})
        if key not in slots:
            slots[key] = factory()
        value: T = slots[key]
        return value
