"""`python -m bench` (what `make bench` runs): every benchmark in CI-friendly sizes, one after another.

Each runs in its own process (``python -m bench.<name> ...``, shown on stderr); its JSON line is
printed as soon as it finishes, and the last stdout line gathers them all with the commands that
produced them. ``--full`` uses each benchmark's own default sizes instead (burst: 1,000 VMs, long).
Exit status 1 when any benchmark fails or prints no JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# name -> arguments for the CI-sized run (under ~3 minutes together on two cores)
CI_SIZES: dict[str, list[str]] = {
    "propagation": ["--vms", "24"],
    "arm_calls": ["--vms", "8"],
    "burst": ["--vms", "40"],
    "host_throughput": [],
    "twin_start": [],
}


def last_json_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return None


def run_one(name: str, args: list[str]) -> tuple[str, dict[str, Any] | None, int, float]:
    command = [sys.executable, "-m", f"bench.{name}", *args]
    shown = " ".join(["python", "-m", f"bench.{name}", *args])
    print(f"$ {shown}", file=sys.stderr, flush=True)
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    return shown, last_json_line(done.stdout), done.returncode, time.monotonic() - started


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description="Run every benchmark and print their JSON.")
    p.add_argument("--only", nargs="+", choices=sorted(CI_SIZES), help="run just these benchmarks")
    p.add_argument("--full", action="store_true", help="each benchmark's default (large) size")
    args = p.parse_args(argv)
    names = args.only or list(CI_SIZES)
    results: dict[str, Any] = {}
    commands: dict[str, str] = {}
    failed: list[str] = []
    for name in names:
        shown, figures, code, seconds = run_one(name, [] if args.full else CI_SIZES[name])
        commands[name] = shown
        if figures is None or code != 0:
            failed.append(name)
            print(f"{name}: exit {code}, {'no JSON' if figures is None else 'JSON above'}", file=sys.stderr)
        if figures is not None:
            results[name] = figures
            print(json.dumps(figures), flush=True)
        print(f"{name}: {seconds:.1f} s", file=sys.stderr, flush=True)
    print(json.dumps({"benchmarks": results, "commands": commands, "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
