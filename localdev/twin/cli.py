"""``python -m localdev twin``: serve the Azure twin; the first stdout line is its endpoints as JSON."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from localdev.clock import make_clock
from localdev.twin.core import Twin, TwinConfig
from localdev.twin.rbac import PropagationModel


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m localdev twin", description=__doc__)
    p.add_argument("--clock", choices=("real", "scaled", "virtual"), default="real", help="time source")
    p.add_argument("--scale", type=float, default=60.0, help="speed-up factor of the scaled clock")
    p.add_argument("--seed", type=int, default=0, help="seeds ids, propagation delays and event faults")
    p.add_argument("--propagation", default="empirical",
                   help="RBAC propagation model: fixed:S, uniform:LOW:HIGH or empirical[:q:s,...]")
    p.add_argument("--principal-replication-seconds", type=float, default=0.0)
    p.add_argument("--run-command-seconds", type=float, default=20.0)
    p.add_argument("--vault", action="append", dest="vaults", help="vault name (repeatable)")
    p.add_argument("--subscription-id", default="")
    p.add_argument("--tenant-id", default="")
    p.add_argument("--location", default="westeurope")
    p.add_argument("--webhook", default=None, help="deliver resource events to this URL")
    p.add_argument("--webhook-schema", choices=("eventgrid", "cloudevents"), default="eventgrid")
    p.add_argument("--no-throttle", action="store_true", help="switch ARM throttling off")
    p.add_argument("--host", default="127.0.0.1")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        config = TwinConfig(
            subscription_id=args.subscription_id, tenant_id=args.tenant_id, location=args.location,
            vault_names=tuple(args.vaults or ("skr-vault",)), host=args.host, seed=args.seed,
            propagation=PropagationModel.parse(args.propagation),
            principal_replication_seconds=args.principal_replication_seconds,
            run_command_duration_seconds=args.run_command_seconds, throttling=not args.no_throttle,
            webhook_url=args.webhook, webhook_schema=args.webhook_schema)
        clock = make_clock(args.clock, scale=args.scale)
    except ValueError as exc:
        print(f"python -m localdev twin: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    twin = Twin(config, clock).start()
    try:
        print(json.dumps(twin.info), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        twin.stop()
        twin.tls.cleanup()
    return 0
