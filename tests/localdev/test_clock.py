"""The shared clock: virtual time jumps only when nobody is busy; real and scaled clocks follow the wall."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from localdev.clock import RealClock, ScaledClock, VirtualClock, make_clock

START = 1_800_000_000.0


def test_virtual_clock_jumps_to_the_next_timer_when_idle() -> None:
    clock = VirtualClock(start=START)
    fired = threading.Event()
    clock.call_later(86_400, fired.set)
    assert fired.wait(timeout=5), "a one-day timer must fire at once when nothing is busy"
    assert clock.time() == START + 86_400
    assert clock.jumps == 1


def test_virtual_time_stands_still_while_busy() -> None:
    clock = VirtualClock(start=START)
    fired = threading.Event()
    clock.acquire_busy()
    clock.call_later(60, fired.set)
    assert not fired.wait(timeout=0.3)
    assert clock.time() == START
    clock.release_busy()
    assert fired.wait(timeout=5)
    assert clock.time() == START + 60


def test_virtual_sleep_blocks_until_its_time_and_orders_sleepers() -> None:
    clock = VirtualClock(start=START)
    woke: list[tuple[str, float]] = []

    def sleeper(name: str, seconds: float) -> None:
        clock.sleep(seconds)
        woke.append((name, clock.time()))

    threads = [threading.Thread(target=sleeper, args=(n, s)) for n, s in (("late", 300), ("early", 30))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    assert woke == [("early", START + 30), ("late", START + 300)]


def test_cancelled_timers_neither_fire_nor_move_time() -> None:
    clock = VirtualClock(start=START)
    fired = threading.Event()
    handle = clock.call_later(1_000, fired.set)
    handle.cancel()
    kept = threading.Event()
    clock.call_later(5, kept.set)
    assert kept.wait(timeout=5)
    assert not fired.wait(timeout=0.2)
    assert clock.time() == START + 5
    assert clock.pending_timers() == 0


def test_a_fired_callback_counts_as_busy_until_it_has_run() -> None:
    clock = VirtualClock(start=START)
    seen_busy: list[int] = []
    later = threading.Event()

    def slow_callback() -> None:
        seen_busy.append(clock.busy_count)
        time.sleep(0.1)  # real work: time must not jump to the next timer meanwhile

    clock.call_later(10, slow_callback)
    clock.call_later(20, later.set)
    assert later.wait(timeout=5)
    assert seen_busy == [1]


def test_release_without_acquire_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="without a matching acquire_busy"):
        VirtualClock(start=START).release_busy()


def test_async_sleep_on_a_virtual_clock() -> None:
    clock = VirtualClock(start=START)

    async def main() -> float:
        await clock.sleep_async(3_600)
        return clock.time()

    assert asyncio.run(asyncio.wait_for(main(), timeout=5)) == START + 3_600


def test_manual_advance_fires_due_timers() -> None:
    clock = VirtualClock(start=START)
    fired = threading.Event()
    with clock.busy():
        clock.call_later(30, fired.set)
        clock.advance(31)
        assert fired.wait(timeout=5)
    assert clock.time() == START + 31


def test_scaled_clock_runs_faster_than_the_wall() -> None:
    clock = ScaledClock(1_000, start=START)
    fired = threading.Event()
    clock.call_later(100, fired.set)  # 0.1 s of wall time
    assert fired.wait(timeout=5)
    assert clock.time() >= START + 100
    with pytest.raises(ValueError, match="positive"):
        ScaledClock(0)


def test_real_clock_follows_the_wall_and_make_clock_names_its_kinds() -> None:
    clock = RealClock()
    assert abs(clock.time() - time.time()) < 1
    fired = threading.Event()
    clock.call_later(0.05, fired.set)
    assert fired.wait(timeout=5)
    assert [make_clock(kind).kind for kind in ("real", "scaled", "virtual")] == ["real", "scaled", "virtual"]
    with pytest.raises(ValueError, match="unknown clock kind 'sundial'"):
        make_clock("sundial")
