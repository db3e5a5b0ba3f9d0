"""One source of time shared by the Azure twin, the local Durable host and the in-VM sandbox.

Three kinds:

* ``real``    - wall-clock time.
* ``scaled``  - wall-clock time running ``factor`` times faster (a live demo of long waits).
* ``virtual`` - discrete-event time: it stands still while any real work is in progress and,
  once everything is idle, jumps straight to the next due timer. A one-day durable timer then
  finishes instantly, yet every actor still sees a consistent ``now``.

The contract every actor keeps on a virtual clock:

* hold ``clock.busy()`` (or ``acquire_busy``/``release_busy``) while doing real work whose
  outcome may register new timers (an episode, an activity in flight, a request being served, a
  subprocess running). Hand work over *before* releasing: acquire for the next step first.
* never wait for virtual time while holding busy: release it, ``sleep``, acquire again.
  A thread that sleeps while holding busy on a virtual clock would wait forever.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime


class TimerHandle:
    """A scheduled callback; ``cancel`` is safe to call at any time, from any thread."""

    __slots__ = ("_callback", "cancelled", "due")

    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self._callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def _fire(self) -> None:
        if not self.cancelled:
            self._callback()


class Clock(ABC):
    """Epoch-seconds time source with blocking, async and callback waits."""

    kind: str = "abstract"

    @abstractmethod
    def time(self) -> float:
        """Seconds since the Unix epoch, as this clock sees it."""

    @abstractmethod
    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` (quickly, on a clock thread) once ``time() >= when``."""

    def monotonic(self) -> float:
        return self.time()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time(), tz=UTC)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.call_at(self.time() + max(0.0, delay), callback)

    def sleep_until(self, when: float) -> None:
        if when <= self.time():
            return
        done = threading.Event()
        self.call_at(when, done.set)
        done.wait()

    def sleep(self, seconds: float) -> None:
        self.sleep_until(self.time() + max(0.0, seconds))

    async def sleep_until_async(self, when: float) -> None:
        if when <= self.time():
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not future.done():
                future.set_result(None)

        def wake() -> None:
            loop.call_soon_threadsafe(settle)

        handle = self.call_at(when, wake)
        try:
            await future
        finally:
            handle.cancel()

    async def sleep_async(self, seconds: float) -> None:
        await self.sleep_until_async(self.time() + max(0.0, seconds))

    # Busy accounting only matters to the virtual clock; the others ignore it.
    def acquire_busy(self) -> None:
        return None

    def release_busy(self) -> None:
        return None

    @contextmanager
    def busy(self) -> Iterator[None]:
        self.acquire_busy()
        try:
            yield
        finally:
            self.release_busy()


class _ThreadedScheduler:
    """Fires callbacks at real deadlines from one daemon thread (used by real and scaled clocks)."""

    def __init__(self, to_real_delay: Callable[[float], float]) -> None:
        self._to_real_delay = to_real_delay
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def schedule(self, handle: TimerHandle) -> None:
        with self._cond:
            heapq.heappush(self._heap, (handle.due, next(self._seq), handle))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="clock-timers", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                due, _, handle = self._heap[0]
                delay = self._to_real_delay(due)
                if delay > 0:
                    self._cond.wait(timeout=min(delay, 1.0))
                    continue
                heapq.heappop(self._heap)
            handle._fire()


class RealClock(Clock):
    kind = "real"

    def __init__(self) -> None:
        self._scheduler = _ThreadedScheduler(lambda due: due - time.time())

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(when, callback)
        self._scheduler.schedule(handle)
        return handle

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock(Clock):
    """Real time sped up by ``factor`` from ``start`` (default: now)."""

    kind = "scaled"

    def __init__(self, factor: float, start: float | None = None) -> None:
        if factor <= 0:
            raise ValueError(f"clock scale factor must be positive, got {factor}")
        self.factor = factor
        self._real_origin = time.time()
        self._origin = self._real_origin if start is None else start
        self._scheduler = _ThreadedScheduler(lambda due: (due - self.time()) / self.factor)

    def time(self) -> float:
        return self._origin + (time.time() - self._real_origin) * self.factor

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(when, callback)
        self._scheduler.schedule(handle)
        return handle


class VirtualClock(Clock):
    """Discrete-event clock: jumps to the next timer once nothing has been busy for ``quiescence``.

    ``quiescence`` is a short real-time grace period that lets hand-offs between actors (an
    activity finishing, the host scheduling the next episode) register before time moves on.
    """

    kind = "virtual"

    def __init__(self, start: float | None = None, quiescence: float = 0.02) -> None:
        self._now = time.time() if start is None else start
        self._quiescence = quiescence
        self._busy = 0
        self._generation = 0
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.jumps = 0

    def time(self) -> float:
        with self._cond:
            return self._now

    @property
    def busy_count(self) -> int:
        with self._cond:
            return self._busy

    def pending_timers(self) -> int:
        with self._cond:
            return sum(1 for _, _, handle in self._heap if not handle.cancelled)

    def next_due(self) -> float | None:
        with self._cond:
            live = [due for due, _, handle in self._heap if not handle.cancelled]
            return min(live) if live else None

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(when, callback)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), handle))
            self._generation += 1
            self._ensure_thread()
            self._cond.notify_all()
        return handle

    def acquire_busy(self) -> None:
        with self._cond:
            self._busy += 1
            self._generation += 1

    def release_busy(self) -> None:
        with self._cond:
            if self._busy <= 0:
                raise RuntimeError("VirtualClock.release_busy without a matching acquire_busy")
            self._busy -= 1
            self._generation += 1
            self._cond.notify_all()

    def advance(self, seconds: float) -> None:
        """Move time forward by hand (tests); due timers fire on the clock thread."""
        with self._cond:
            self._now += max(0.0, seconds)
            self._generation += 1
            self._ensure_thread()
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="virtual-clock", daemon=True)
            self._thread.start()

    def _pop_due(self) -> list[TimerHandle]:
        due: list[TimerHandle] = []
        while self._heap and (self._heap[0][0] <= self._now or self._heap[0][2].cancelled):
            _, _, handle = heapq.heappop(self._heap)
            if not handle.cancelled:
                due.append(handle)
        return due

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    ready = self._pop_due()
                    if ready:
                        # Fired callbacks count as busy until they have run: between popping a
                        # timer and running it nothing else may look idle and jump time forward.
                        self._busy += 1
                        self._generation += 1
                        break
                    if self._busy == 0 and self._heap:
                        generation = self._generation
                        self._cond.wait(timeout=self._quiescence)
                        if self._busy == 0 and self._generation == generation and self._heap:
                            self._now = max(self._now, self._heap[0][0])
                            self.jumps += 1
                        continue
                    self._cond.wait()
            try:
                for handle in ready:
                    handle._fire()
            finally:
                self.release_busy()


def make_clock(kind: str, *, scale: float = 60.0, start: float | None = None) -> Clock:
    """Build a clock from a CLI/settings word; a clear error for anything else."""
    if kind == "real":
        return RealClock()
    if kind == "scaled":
        return ScaledClock(scale, start)
    if kind == "virtual":
        return VirtualClock(start)
    raise ValueError(f"unknown clock kind {kind!r}: expected 'real', 'scaled' or 'virtual'")
