"""``python -m localdev serve``: run a Durable Functions app locally, like ``func start``.

Prints one JSON line when listening (``{"event": "listening", "baseUrl": ..., "rpcBaseUrl": ...}``),
logs to stderr, stops cleanly on SIGINT/SIGTERM, and resumes from ``--db`` after a crash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from localdev.clock import Clock, make_clock
from localdev.host.registry import AppLoadError, load_app
from localdev.host.runtime import HostRuntime, options_from_host_json
from localdev.host.store import Store
from localdev.host.timefmt import seconds_from_ticks

DEFAULT_DB = ".localdev-host.sqlite"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m localdev serve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--app", default="function_app:app", help="MODULE:ATTR of the FunctionApp (default %(default)s)"
    )
    parser.add_argument("--clock", choices=("real", "scaled", "virtual"), default="real")
    parser.add_argument("--scale", type=float, default=60.0, help="speed-up of --clock scaled (default %(default)s)")
    parser.add_argument("--db", default=DEFAULT_DB, help="SQLite file (default %(default)s; ':memory:' = none)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=7071, help="port for everything; 0 = any free port")
    parser.add_argument(
        "--function-key",
        default=os.environ.get("LOCALDEV_FUNCTION_KEY"),
        help="require this key (code= / x-functions-key) on function-level routes; default: accept all",
    )
    parser.add_argument(
        "--settings", default="local.settings.json", help="app settings file whose Values go to env ('-' = none)"
    )
    parser.add_argument("--host-json", default="host.json", help="host.json to honour ('-' = none)")
    parser.add_argument("--schema", choices=("v1", "v2", "v3"), default="v3", help="out-of-proc replay schema")
    parser.add_argument("--no-timer-triggers", action="store_true", help="do not fire timer triggers on schedule")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def _load_settings(path: str) -> list[str]:
    """Apply ``Values`` of a local.settings.json to the environment (existing variables win)."""
    file = Path(path)
    if not file.is_file():
        return []
    values = json.loads(file.read_text(encoding="utf-8")).get("Values") or {}
    applied = []
    for key, value in values.items():
        if key not in os.environ:
            os.environ[key] = str(value)
            applied.append(key)
    return applied


def _clock(args: argparse.Namespace) -> Clock:
    start: float | None = None
    if args.clock == "virtual" and args.db != ":memory:" and Path(args.db).exists():
        store = Store(args.db)
        try:
            stored = store.get_meta("clock_ticks")
        finally:
            store.close()
        start = max(time.time(), seconds_from_ticks(int(stored))) if stored else None
    return make_clock(args.clock, scale=args.scale, start=start)


async def _serve(runtime: HostRuntime, args: argparse.Namespace) -> None:
    urls = await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    announcement: dict[str, Any] = {
        "event": "listening",
        "baseUrl": urls.base_url,
        "rpcBaseUrl": urls.rpc_base,
        "db": args.db,
        "clock": args.clock,
        "taskHub": runtime.options.task_hub,
        "functions": runtime.registry.describe(),
    }
    print(json.dumps(announcement), flush=True)
    try:
        await stop.wait()
    finally:
        await runtime.stop()


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), stream=sys.stderr, format="[%(asctime)s] %(levelname)s %(message)s"
    )
    _load_settings(args.settings)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        app = load_app(args.app)
    except AppLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host_json = args.host_json if Path(args.host_json).is_file() else None
    options = options_from_host_json(
        host_json,
        db_path=args.db,
        host=args.host,
        port=args.port,
        function_key=args.function_key or None,
        schema=args.schema,
        timer_triggers=not args.no_timer_triggers,
    )
    try:
        runtime = HostRuntime(app, _clock(args), options)
    except (AppLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(runtime, args))
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
