"""`python -m localdev demo`: onboard a simulated fleet end to end against the Azure twin.

The twin and the local Durable host share one clock (virtual by default, so RBAC propagation of
minutes costs no real time); the app runs unchanged, configured against the twin by settings.
Exits 0 only when every VM reached its expected outcome.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from localdev.clock import Clock, RealClock, ScaledClock, VirtualClock
from localdev.demo_fleet import build_fleet
from localdev.demo_runner import FleetRun
from localdev.demo_summary import build_summary
from localdev.demo_view import ProgressReporter, summary_renderable
from localdev.stack import Stack, start_stack
from localdev.twin.core import TwinConfig

VIRTUAL_LIMIT_SECONDS = 3 * 3600.0  # far beyond the 15-minute propagation deadline: a hung run ends


@dataclass(frozen=True)
class DemoOptions:
    vms: int = 24
    seed: int = 42
    db: Path | None = None
    json_path: Path | None = None
    real_time: bool = False
    speed: float = 10.0
    burst_seconds: float = 60.0
    timeout_seconds: float = 900.0
    live: bool | None = None  # None: a live table on a terminal, plain lines otherwise
    serve: bool = False  # keep the app's HTTP API up after the summary, until Ctrl-C


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m localdev demo",
        description="Onboard a simulated fleet of Confidential VMs end to end against the local Azure twin.",
    )
    p.add_argument("--vms", type=_positive_int, default=24, help="fleet size (default 24)")
    p.add_argument("--seed", type=int, default=42, help="same seed, same fleet and RBAC delays (default 42)")
    p.add_argument("--db", type=Path, help="keep the host's Durable store in this new SQLite file")
    p.add_argument("--json", dest="json_path", type=Path, help="write the summary as JSON to this file")
    p.add_argument("--real-time", action="store_true", help="run on a wall clock sped up by --speed")
    p.add_argument("--speed", type=_positive_float, default=10.0,
                   help="with --real-time: simulated seconds per real second (1 = real time; default 10)")
    p.add_argument("--burst", dest="burst_seconds", type=_non_negative_float, default=60.0,
                   help="the VMs are created within this many simulated seconds (default 60)")
    p.add_argument("--timeout", dest="timeout_seconds", type=_positive_float, default=900.0,
                   help="give up after this many real seconds (default 900)")
    p.add_argument("--serve", action="store_true",
                   help="after the summary keep the twin and the app running (HTTP API on loopback) until Ctrl-C")
    live = p.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_true", default=None, help="force the live table")
    live.add_argument("--plain", dest="live", action="store_false", help="plain progress lines (CI logs)")
    return p


def parse_options(argv: list[str]) -> DemoOptions:
    """Parse and check the options before anything starts (bad input changes nothing)."""
    p = parser()
    args = p.parse_args(argv)
    if args.db is not None and args.db.exists():
        p.error(f"--db {args.db} already exists: the demo starts from an empty store (delete it or pick a new path)")
    for flag, path in (("--db", args.db), ("--json", args.json_path)):
        if path is not None and not path.resolve().parent.is_dir():
            p.error(f"{flag} {path}: directory {path.resolve().parent} does not exist")
    return DemoOptions(**vars(args))


def make_demo_clock(options: DemoOptions) -> Clock:
    if not options.real_time:
        return VirtualClock()
    return RealClock() if options.speed == 1 else ScaledClock(options.speed)


def clock_label(clock: Clock, elapsed: float) -> str:
    minutes, seconds = divmod(int(elapsed), 60)
    kind = clock.kind if not isinstance(clock, ScaledClock) else f"scaled x{clock.factor:g}"
    return f"{kind} clock, t+{minutes}m{seconds:02d}s"


def run_demo(options: DemoOptions, console: Console) -> dict[str, Any]:
    """Run the whole demo and return its summary (also rendered to ``console``)."""
    fleet = build_fleet(options.vms, options.seed, burst_seconds=options.burst_seconds)
    clock = make_demo_clock(options)
    wall_start = time.monotonic()
    with start_stack(
        clock=clock,
        twin_config=TwinConfig(seed=options.seed),
        db_path=options.db,
        host_log_level=logging.WARNING,
    ) as stack:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(fleet.counts().items()))
        console.print(f"[bold]SKR Orchestrator demo[/]: {len(fleet.vms)} VMs (seed {options.seed}): {kinds}")
        console.print(f"twin ARM {stack.twin.urls.arm} · vault {stack.twin.urls.vault} · host {stack.host.base_url}",
                      highlight=False)
        run = FleetRun(stack, fleet)
        run.schedule()
        with ProgressReporter(console, live=options.live) as reporter:

            def tick() -> None:
                reporter.update(run.rows(), clock_label(clock, clock.time() - run.start))

            ended = run.wait(tick, wall_timeout=options.timeout_seconds, virtual_limit=VIRTUAL_LIMIT_SECONDS)
        outcomes = run.outcomes()
        events = run.published_events()
        summary = build_summary(
            outcomes,
            events,
            seed=options.seed,
            clock=clock.kind,
            simulated_seconds=clock.time() - run.start,
            wall_seconds=time.monotonic() - wall_start,
            delivered_events=run.delivered_write_events(),
            extra={"ended": ended, "errors": run.errors, "db": str(options.db) if options.db else None},
        )
        if run.errors or ended != "finished":
            summary["ok"] = False
        console.print(summary_renderable(summary, events))
        if ended != "finished":
            console.print(f"[bold red]the run ended early: {ended}[/]")
        for error in run.errors:
            console.print(f"[red]{error}[/]", highlight=False)
        if options.serve:
            serve_until_interrupted(stack, console)
    return summary


def serve_until_interrupted(stack: Stack, console: Console) -> None:
    """Leave the stack up so the app's HTTP API can be tried by hand (README: HTTP API)."""
    console.print(
        f"\nThe app is serving: BASE={stack.host.base_url}/api KEY={stack.function_key}\n"
        f"  curl -s -H \"x-functions-key: $KEY\" \"$BASE/onboardings?outcome=failed\"\n"
        f"VMs live in subscription {stack.twin.config.subscription_id} of the twin (admin API "
        f"{stack.twin.urls.admin}/admin). Ctrl-C stops.",
        highlight=False,
        soft_wrap=True,
    )
    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str]) -> int:
    options = parse_options(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 120))  # CI logs: room for the tables
    summary = run_demo(options, console)
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        console.print(f"summary written to {options.json_path}", highlight=False)
    if options.db is not None:
        console.print(f"Durable store kept in {options.db}", highlight=False)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
