""".NET-shaped time text: the extension serialises DateTime with 7 fraction digits (100 ns ticks).

Times inside the host are integer ticks since the Unix epoch, so a timer's FireAt survives a
text round trip exactly (float seconds would drift by a tick and re-arm long-timer chunks).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

TICKS_PER_SECOND = 10_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2})?$"
)


def ticks_from_seconds(seconds: float) -> int:
    return round(seconds * TICKS_PER_SECOND)


def seconds_from_ticks(ticks: int) -> float:
    return ticks / TICKS_PER_SECOND


def format_ticks(ticks: int) -> str:
    """``2024-01-01T00:00:00.1234567Z`` - the Newtonsoft round-trip form the extension sends."""
    whole, frac = divmod(ticks, TICKS_PER_SECOND)
    stamp = _EPOCH + timedelta(seconds=whole)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{frac:07d}Z"


def format_status_time(ticks: int) -> str:
    """``2024-01-01T00:00:00Z`` - the extension's status payload (``ToString("s") + "Z"``)."""
    stamp = _EPOCH + timedelta(seconds=ticks // TICKS_PER_SECOND)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}Z"


def parse_ticks(text: str) -> int:
    """Parse ISO-8601 text (any fraction length, ``Z`` or offset, naive = UTC) into epoch ticks."""
    match = _ISO.match(text.strip())
    if match is None:
        raise ValueError(f"not an ISO-8601 date-time: {text!r}")
    base = datetime.fromisoformat(f"{match['date']}T{match['time']}").replace(tzinfo=UTC)
    frac = (match["frac"] or "")[:7].ljust(7, "0")
    tz = match["tz"]
    offset = 0
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    whole = int((base - _EPOCH).total_seconds()) - offset
    return whole * TICKS_PER_SECOND + int(frac)


def format_timespan(seconds: int) -> str:
    """.NET ``TimeSpan.ToString("c")``: ``d.hh:mm:ss`` (days omitted when zero)."""
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}.{clock}" if days else clock
