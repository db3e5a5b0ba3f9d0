"""Rich rendering of the demo: the live progress table and the final summary.

Works on a terminal (live table) and without one (CI logs): :class:`ProgressReporter` then prints
one plain line whenever the stage counts change, and the summary renders as static tables.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

_STYLE = {"released": "green", "skipped": "yellow", "failed": "red"}


@dataclass(frozen=True)
class ProgressRow:
    name: str
    kind: str
    expected: str
    stage: str = "waiting_for_event"
    attempt: int | None = None
    since_assignment_s: float | None = None
    outcome: str | None = None  # set once the instance has finished
    detail: str | None = None  # the custom status detail, e.g. the last in-VM answer


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _outcome_text(outcome: str | None, expected: str) -> Text:
    if outcome is None:
        return Text("")
    style = _STYLE.get(outcome.split("/", 1)[0], "white")
    mark = "✓" if outcome == expected else "✗"
    return Text(f"{mark} {outcome}", style=style if outcome == expected else "bold red")


def progress_table(rows: list[ProgressRow], clock_label: str) -> Table:
    table = Table(title=f"SKR onboarding — {clock_label}", title_justify="left", expand=False)
    table.add_column("VM", no_wrap=True)
    table.add_column("kind", style="dim")
    table.add_column("stage")
    table.add_column("attempt", justify="right")
    table.add_column("since assignment", justify="right")
    table.add_column("outcome")
    table.add_column("detail", style="dim", no_wrap=True, max_width=60, overflow="ellipsis")
    for row in rows:
        table.add_row(
            row.name,
            row.kind,
            row.stage,
            "-" if row.attempt is None else str(row.attempt),
            _fmt_seconds(row.since_assignment_s),
            _outcome_text(row.outcome, row.expected),
            row.detail or "",
        )
    return table


def stage_counts_line(rows: list[ProgressRow], clock_label: str) -> str:
    counts = Counter(row.outcome.split("/", 1)[0] if row.outcome else row.stage for row in rows)
    parts = ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
    return f"[{clock_label}] {parts}"


class ProgressReporter:
    """Live table on a terminal; otherwise a line when the stage counts changed, at most one per
    ``min_interval`` real seconds (the last state is always printed on exit)."""

    def __init__(self, console: Console, *, live: bool | None = None, min_interval: float = 1.0) -> None:
        self._console = console
        self._want_live = console.is_terminal if live is None else live
        self._live: Live | None = None
        self._min_interval = min_interval
        self._last_line = ""
        self._last_printed_at = float("-inf")
        self._pending: str | None = None

    def __enter__(self) -> ProgressReporter:
        if self._want_live:
            self._live = Live(console=self._console, refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def update(self, rows: list[ProgressRow], clock_label: str) -> None:
        if self._live is not None:
            self._live.update(progress_table(rows, clock_label))
            return
        line = stage_counts_line(rows, "")
        if line == self._last_line:
            self._pending = None  # back to what was printed last: nothing new to show
            return
        self._pending = stage_counts_line(rows, clock_label)
        if time.monotonic() - self._last_printed_at >= self._min_interval:
            self._last_line = line
            self._flush()

    def _flush(self) -> None:
        if self._pending is not None:
            self._console.print(self._pending, markup=False, highlight=False, soft_wrap=True)
            self._pending = None
            self._last_printed_at = time.monotonic()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
        else:
            self._flush()


def _outcomes_table(summary: dict[str, Any]) -> Table:
    table = Table(title="Outcome per VM", title_justify="left")
    table.add_column("VM", no_wrap=True)
    table.add_column("kind", style="dim", no_wrap=True)
    table.add_column("outcome (✓ = as expected)")
    table.add_column("RBAC delay", justify="right")
    table.add_column("propagation", justify="right")
    table.add_column("runs", justify="right")
    for vm in summary["vms"]:
        outcome = _outcome_text(vm["actual"], vm["expected"])
        if vm["actual"] != vm["expected"]:
            outcome.append(f" (expected {vm['expected']})")
        table.add_row(
            vm["name"],
            vm["kind"],
            outcome,
            _fmt_seconds(vm["rbac_delay_seconds"]),
            _fmt_seconds(vm["propagation_seconds"]),
            str(vm["release_attempts"]),
        )
    return table


def _figures_table(summary: dict[str, Any]) -> Table:
    counts = summary["counts"]
    table = Table(title="Summary", title_justify="left", show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value")
    table.add_row("VMs as expected", f"{counts['as_expected']}/{counts['vms']}")
    table.add_row("outcomes", ", ".join(f"{k} {v}" for k, v in counts["by_outcome"].items()))
    table.add_row(
        "VM write events delivered",
        f"{counts['write_events_delivered']} of {counts['write_events_emitted']} "
        f"({counts['duplicate_events']} duplicates)",
    )
    for label, key in (("propagation", "propagation"), ("detection lag", "detection_lag")):
        dist = summary[key]
        if dist["n"]:
            table.add_row(
                f"{label} (n={dist['n']})",
                f"p50 {dist['p50_s']} s · p95 {dist['p95_s']} s · max {dist['max_s']} s",
            )
    table.add_row("simulated time", _fmt_seconds(summary["simulated_seconds"]))
    table.add_row("wall time", f"{summary['wall_seconds']} s")
    return table


def _events_table(events: list[dict[str, Any]]) -> Table:
    table = Table(title="Published result events (Event Grid topic)", title_justify="left")
    table.add_column("type")
    table.add_column("subject")
    table.add_column("outcome")
    for event in events:
        raw = event.get("data")
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        subject = str(event.get("subject", ""))
        table.add_row(
            str(event.get("type", "")),
            subject.rsplit("/", 1)[-1],
            str(data.get("failure_code") or data.get("skip_reason") or data.get("outcome") or ""),
        )
    return table


def summary_renderable(summary: dict[str, Any], events: list[dict[str, Any]]) -> RenderableType:
    verdict = (
        Text("every VM reached its expected outcome", style="bold green")
        if summary["ok"]
        else Text(f"NOT as expected: {', '.join(summary['mismatched']) or 'no VMs'}", style="bold red")
    )
    return Group(_outcomes_table(summary), _events_table(events), _figures_table(summary), verdict)
