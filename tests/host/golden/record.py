"""Re-record the golden histories: ``python -m tests.host.golden.record`` (run from the repo root).

Each file keeps one orchestration's complete DTFx-shaped history from the sample app; the golden
tests replay them against the current code. Re-record only on purpose: a diff here means the
recorded behaviour of the sample orchestrations changed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localdev.clock import VirtualClock
from localdev.host import LocalHost

HERE = Path(__file__).parent
FEATURES = "tests.host.apps.features:app"
CASES: dict[str, tuple[str, Any]] = {
    "chain": ("chain", ["Tokyo", "Seattle", "London"]),
    "fan_out": ("fan_out", 5),
    "retrying": ("retrying", {"token": "golden-retry", "fail_times": 2, "interval_ms": 30_000}),
    "race_timeout": ("race", None),
    "long_timer": ("sleeper", 10),
    "continue_as_new": ("counter", 0),
    "sub_orchestrations": ("parent", "golden-parent"),
    "activity_failure": ("catcher", "golden"),
    "orchestrator_failure": ("failing", None),
    "replay_safe": ("replay_safe", None),
    "changing": ("changing", None),
}


def record() -> list[Path]:
    clock = VirtualClock(start=datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    written = []
    with LocalHost(FEATURES, clock=clock) as host:
        for case, (orchestrator, payload) in CASES.items():
            instance_id = host.start_new(orchestrator, payload, instance_id=f"golden-{case}")
            if orchestrator == "changing":
                host.run_until_idle()
                host.raise_event(instance_id, "go")
            status = host.wait_for(instance_id)
            document = {
                "orchestrator": orchestrator,
                "runtimeStatus": status.runtime_status,
                "output": status.output,
                "history": host.history(instance_id),
            }
            path = HERE / f"{case}.json"
            path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
            written.append(path)
    return written


if __name__ == "__main__":
    for written_path in record():
        print(written_path)
