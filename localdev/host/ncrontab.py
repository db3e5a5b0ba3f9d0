"""Timer-trigger schedules: 6-field NCRONTAB (``sec min hour day month dow``) or a ``[d.]hh:mm:ss`` interval.

Matching follows NCrontab, which Azure Functions uses: every field must match, so a restricted
day-of-month and a restricted day-of-week are AND-ed (classic cron OR-s them). Times are UTC
(``WEBSITE_TIME_ZONE`` is not emulated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, start=1)}
_DAYS = {name: number for number, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}),
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 6, _DAYS),
)
_INTERVAL = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")
_SEARCH_LIMIT_DAYS = 366 * 5


class ScheduleError(ValueError):
    """A schedule expression that NCRONTAB (or the interval form) does not accept."""


def _value(token: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    text = token.strip().lower()
    number = names.get(text)
    if number is None:
        if not text.isdigit():
            raise ScheduleError(f"{field}: {token!r} is not a number or a known name")
        number = int(text)
    if field == "day-of-week" and number == 7:
        number = 0
    if not low <= number <= high:
        raise ScheduleError(f"{field}: {number} is outside {low}-{high}")
    return number


def _parse_field(text: str, low: int, high: int, names: dict[str, int], field: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"{field}: empty list element in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{field}: bad step {step_text!r}")
            step = int(step_text)
        if base == "*":
            start, stop = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, stop = _value(first, low, high, names, field), _value(last, low, high, names, field)
            if start > stop:
                raise ScheduleError(f"{field}: range {base!r} runs backwards")
        else:
            start = _value(base, low, high, names, field)
            stop = high if step_text else start
        values.update(range(start, stop + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; ``next_after`` gives the first occurrence strictly after a time."""

    expression: str
    interval: timedelta | None = None
    fields: tuple[frozenset[int], ...] = ()

    def next_after(self, when: datetime) -> datetime:
        when = when.astimezone(UTC)
        if self.interval is not None:
            return when + self.interval
        seconds, minutes, hours, days, months, weekdays = self.fields
        candidate = when.replace(microsecond=0) + timedelta(seconds=1)
        limit = when + timedelta(days=_SEARCH_LIMIT_DAYS)
        while candidate <= limit:
            if candidate.month not in months:
                year, month = candidate.year + candidate.month // 12, candidate.month % 12 + 1
                candidate = candidate.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)
                continue
            weekday = (candidate.weekday() + 1) % 7
            if candidate.day not in days or weekday not in weekdays:
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if candidate.hour not in hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0, second=0)
                continue
            if candidate.minute not in minutes:
                candidate = (candidate + timedelta(minutes=1)).replace(second=0)
                continue
            if candidate.second not in seconds:
                candidate += timedelta(seconds=1)
                continue
            return candidate
        raise ScheduleError(f"schedule {self.expression!r} never fires within {_SEARCH_LIMIT_DAYS} days")


def parse_schedule(expression: str) -> Schedule:
    text = expression.strip()
    interval = _INTERVAL.match(text)
    if interval:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in interval.groups())
        span = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if span <= timedelta(0):
            raise ScheduleError(f"interval schedule {expression!r} must be positive")
        return Schedule(expression, interval=span)
    parts = text.split()
    if len(parts) != 6:
        raise ScheduleError(
            f"schedule {expression!r} has {len(parts)} fields; NCRONTAB needs 6 "
            "(second minute hour day month day-of-week)"
        )
    fields = tuple(
        _parse_field(part, low, high, names, name)
        for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)
    )
    return Schedule(text, fields=fields)
