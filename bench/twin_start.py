"""How fast the Azure twin starts and stops (issue 3 asks for < 2 s); prints JSON.

Measures in-process construction (PKI, signing keys, seeded roles), listener start-up until every
port accepts connections, the first authenticated round trip, and shutdown, plus the cold start of
``python -m localdev twin`` until its first stdout line.

    python -m bench.twin_start [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median_s": round(statistics.median(ordered), 4), "max_s": round(ordered[-1], 4),
            "min_s": round(ordered[0], 4)}


def in_process(runs: int) -> dict[str, Any]:
    from localdev.twin.core import Twin
    from localdev.twin.testing import authorization_client

    build, start, first_call, stop = [], [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        twin = Twin()
        t1 = time.perf_counter()
        twin.start()
        t2 = time.perf_counter()
        authorization_client(twin).role_definitions.get(f"/subscriptions/{twin.config.subscription_id}",
                                                        "08bbd89e-9f13-488c-ac41-acfcb10c90ab")
        t3 = time.perf_counter()
        twin.stop()
        twin.tls.cleanup()
        t4 = time.perf_counter()
        build.append(t1 - t0)
        start.append(t2 - t1)
        first_call.append(t3 - t2)
        stop.append(t4 - t3)
    total = [b + s for b, s in zip(build, start, strict=True)]
    return {"construct": _summary(build), "listen": _summary(start), "start_total": _summary(total),
            "first_arm_call": _summary(first_call), "stop": _summary(stop)}


def cli_cold_start(runs: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "localdev", "twin"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        json.loads(proc.stdout.readline())
        times.append(time.perf_counter() - t0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    return {"first_line": _summary(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.twin_start")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    result = {"benchmark": "twin_start", "runs": args.runs, "in_process": in_process(args.runs),
              "cli": cli_cold_start(max(1, args.runs // 2)), "target_s": 2.0}
    result["meets_target"] = (result["in_process"]["start_total"]["max_s"] < 2.0
                              and result["cli"]["first_line"]["max_s"] < 2.0)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
