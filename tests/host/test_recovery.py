"""A stopped or killed host resumes from SQLite: queued work is re-derived from the stored history."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from localdev.clock import VirtualClock
from localdev.host import LocalHost
from localdev.host.history import EventType
from tests.host.conftest import FEATURES

REPO = Path(__file__).resolve().parents[2]


def test_in_process_restart_resumes_events_timers_and_activities(tmp_path: Path) -> None:
    db = tmp_path / "host.sqlite"
    blocker = threading.Event()
    with LocalHost(FEATURES, db_path=db) as first:
        first.mock_activity("square", lambda value: blocker.wait(30) and value)
        waiting = first.start_new("collector", 1)
        sleeping = first.start_new("sleeper", 1)
        busy = first.start_new("child", 5)
        first.wait_until(lambda: first.engine.pending()["activities"] != [])  # square is in flight
        assert EventType.TIMER_CREATED in [e["EventType"] for e in first.history(sleeping)]
    blocker.set()  # the abandoned activity thread may finish now; its result is never delivered
    with LocalHost(FEATURES, db_path=db, clock=VirtualClock()) as second:
        second.raise_event(waiting, "step", "after restart")
        assert second.wait_for(waiting).output == ['"after restart"']
        assert second.wait_for(sleeping).output == 86400.0  # the timer was re-armed from TimerCreated
        assert second.wait_for(busy).output["value"] == 25  # the in-flight activity ran again
        assert [c.name for c in second.activity_calls()] == ["square"]
        for instance_id in (waiting, sleeping, busy):
            assert second.check_replay(instance_id).ok


def _serve(db: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "localdev", "serve", "--app", "tests.host.apps.crash:app", "--port", "0"]
    command += ["--db", str(db), "--clock", "virtual", "--settings", "-", "--host-json", "-", "--no-timer-triggers"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log.open("a"), text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait(10)
        raise AssertionError(f"the host did not start:\n{log.read_text()}")
    announcement = json.loads(line)
    assert announcement["event"] == "listening"
    return process, announcement["baseUrl"]


def _until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _status(base: str, instance_id: str, history: bool = False) -> dict[str, Any]:
    query = {"showHistory": "true"} if history else {}
    return httpx.get(f"{base}/durabletask/instances/{instance_id}", params=query, timeout=30).json()


def _run(tmp: Path, *, crash: bool) -> tuple[list[str], int]:
    markers = tmp / "markers"
    markers.mkdir()
    db, log = tmp / "host.sqlite", tmp / "host.log"
    process, base = _serve(db, log)
    try:
        started = httpx.post(f"{base}/api/start", json={"dir": str(markers)}, timeout=30)
        assert started.status_code == 202
        instance_id = started.json()["id"]
        _until(lambda: (markers / "started-1").exists(), "the slow activity to start")
        if crash:
            kinds = [e["EventType"] for e in _status(base, instance_id, history=True)["historyEvents"]]
            assert "TimerCreated" in kinds and "TimerFired" not in kinds  # a timer is pending
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            process, base = _serve(db, log)  # same database, new port
            _until(lambda: (markers / "started-2").exists(), "the in-flight activity to run again")
        (markers / "release").touch()
        final = _until(
            lambda: (s := _status(base, instance_id))["runtimeStatus"] in ("Completed", "Failed") and s,
            "the orchestration to finish",
        )
        assert final["runtimeStatus"] == "Completed", final
        return final["output"], len(list(markers.glob("started-*")))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def test_sigkill_with_activity_in_flight_and_timer_pending_resumes(tmp_path: Path) -> None:
    (tmp_path / "clean").mkdir()
    (tmp_path / "crash").mkdir()
    reference, clean_runs = _run(tmp_path / "clean", crash=False)
    recovered, crash_runs = _run(tmp_path / "crash", crash=True)
    assert reference == ["step one", "slow done", "step two"]
    assert recovered == reference
    assert (clean_runs, crash_runs) == (1, 2)  # at-least-once: the killed activity ran again
