"""Local Durable host throughput and replay cost; the last stdout line is one JSON object.

* throughput: completed orchestrations per second, each calling 5 activities in sequence, many
  instances in flight at once (virtual clock, in-memory SQLite, real SDK replay every episode);
* replay cost: time to replay one history against its length (a fan-out of n activities gives
  ~2n events), to show how per-episode cost grows. Every episode replays the whole history, so a
  sequential orchestration of n steps costs O(n^2) overall - keep histories short, or continue-as-new.

    python -m bench.host_throughput [--instances N] [--lengths 10,50,100,200,400] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from localdev.clock import VirtualClock
from localdev.host import LocalHost, replay_history

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.orchestration_trigger(context_name="context")
def five_steps(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    value = context.get_input()
    for _ in range(5):
        value = yield context.call_activity("increment", value)
    return value


@app.orchestration_trigger(context_name="context")
def wide(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    # a fan-out builds a long history in few episodes, so measuring many lengths stays quick
    values = yield context.task_all([context.call_activity("increment", i) for i in range(context.get_input())])
    return sum(values)


@app.activity_trigger(input_name="value")
def increment(value: int) -> int:
    return value + 1


def throughput(host: LocalHost, instances: int) -> dict[str, Any]:
    episodes_before = host.engine.episodes
    started = time.perf_counter()
    ids = [host.start_new("five_steps", i) for i in range(instances)]
    for instance_id in ids:
        status = host.wait_for(instance_id, timeout=600)
        if status.runtime_status != "Completed":
            raise RuntimeError(f"{instance_id} ended {status.runtime_status}: {status.output}")
    elapsed = time.perf_counter() - started
    return {
        "orchestrations": instances,
        "activities_per_orchestration": 5,
        "seconds": round(elapsed, 3),
        "orchestrations_per_second": round(instances / elapsed, 1),
        "activities_per_second": round(5 * instances / elapsed, 1),
        "episodes": host.engine.episodes - episodes_before,
    }


def replay_cost(host: LocalHost, lengths: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for length in lengths:
        instance_id = host.start_new("wide", length)
        host.wait_for(instance_id, timeout=600)
        history = host.history(instance_id)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            report = replay_history(host.registry, history)
            timings.append(time.perf_counter() - started)
            if not report.ok:
                raise RuntimeError(f"replay of {length} steps diverged: {report.problems}")
        median = statistics.median(timings)
        rows.append(
            {
                "activities": length,
                "history_events": len(history),
                "replay_ms": round(median * 1000, 3),
                "us_per_event": round(median * 1e6 / len(history), 2),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.host_throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--lengths", default="10,50,100,200,400")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    lengths = [int(part) for part in args.lengths.split(",") if part.strip()]
    if args.instances < 1 or args.repeats < 1 or not lengths or min(lengths) < 1:
        parser.error("--instances, --repeats and every --lengths entry must be >= 1")
    with LocalHost(app, clock=VirtualClock(), log_level=30) as host:
        host.wait_for(host.start_new("five_steps", 0))  # warm-up: imports, first session, caches
        load = throughput(host, args.instances)
        replay = replay_cost(host, lengths, args.repeats)
    first, last = replay[0], replay[-1]
    result = {
        "benchmark": "host_throughput",
        **load,
        "replay_cost": replay,
        "replay_growth": {
            "events_ratio": round(last["history_events"] / first["history_events"], 2),
            "time_ratio": round(last["replay_ms"] / first["replay_ms"], 2) if first["replay_ms"] else None,
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
