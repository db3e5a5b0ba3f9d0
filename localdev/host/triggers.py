"""Timer triggers: fired on their NCRONTAB schedule by the shared clock, or on request."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from localdev.clock import TimerHandle
from localdev.host.engine import Engine
from localdev.host.invoke import Invoker
from localdev.host.logs import HOST_LOGGER, scoped

log = logging.getLogger(HOST_LOGGER)


@dataclass
class _State:
    handle: TimerHandle | None = None
    last: datetime | None = None


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat()


class TimerTriggers:
    def __init__(self, engine: Engine, invoker: Invoker, *, on_schedule: bool) -> None:
        self.engine = engine
        self.invoker = invoker
        self.on_schedule = on_schedule
        self._states: dict[str, _State] = {name: _State() for name in engine.registry.timers}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False

    def start(self) -> None:
        if not self.on_schedule:
            return
        for name, (info, _) in self.engine.registry.timers.items():
            if info.trigger.get("runOnStartup"):
                self._launch(name, scheduled=self.engine.clock.now())
            self._arm(name)

    async def stop(self) -> None:
        self._stopped = True
        for state in self._states.values():
            if state.handle is not None:
                state.handle.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run_now(self, name: str) -> None:
        """The admin route: invoke a timer-triggered function immediately, like ``POST /admin/functions/{name}``."""
        await self._invoke(name, self.engine.clock.now(), past_due=False)

    def _arm(self, name: str) -> None:
        if self._stopped:
            return
        _, schedule = self.engine.registry.timers[name]
        when = schedule.next_after(self.engine.clock.now())
        self._states[name].handle = self.engine.clock.call_at(when.timestamp(), lambda: self._due(name, when))

    def _due(self, name: str, when: datetime) -> None:
        """Clock thread: take busy first, then hand over to the loop (the clock contract)."""
        self.engine.clock.acquire_busy()
        try:
            self.engine.loop.call_soon_threadsafe(self._fire, name, when)
        except RuntimeError:
            self.engine.clock.release_busy()

    def _fire(self, name: str, when: datetime) -> None:
        self.engine.work_begin()
        self.engine.clock.release_busy()
        try:
            if not self._stopped:
                self._launch(name, scheduled=when)
                self._arm(name)
        finally:
            self.engine.work_end()

    def _launch(self, name: str, scheduled: datetime) -> None:
        self.engine.work_begin()
        task = self.engine.loop.create_task(self._invoke(name, scheduled, past_due=False, owned=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _invoke(self, name: str, scheduled: datetime, *, past_due: bool, owned: bool = False) -> None:
        info, schedule = self.engine.registry.timers[name]
        state = self._states[name]
        status: dict[str, Any] = {
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": {
                "Last": _iso(state.last),
                "Next": _iso(schedule.next_after(scheduled)),
                "LastUpdated": _iso(scheduled),
            },
            "IsPastDue": past_due,
        }
        state.last = scheduled
        try:
            with scoped(self.engine.scope):
                await self.invoker.timer(info, status)
        except Exception:  # logged by the invoker; a failing timer function never stops the host
            log.debug("timer function %s failed", name)
        finally:
            if owned:
                self.engine.work_end()
