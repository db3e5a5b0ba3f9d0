"""Golden histories (recorded by ``python -m tests.host.golden.record``) replay to identical actions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from localdev.host import LocalHost, ReplayMismatchError, replay_history
from localdev.host.history import EventType, activity_input
from localdev.host.registry import Registry, build_registry, load_app
from tests.host.apps import features
from tests.host.conftest import FEATURES

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.json"))


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry(load_app(FEATURES))


def _recorded_actions(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The actions a history proves were scheduled, in the shape replay reports them."""
    actions = []
    for event in history:
        kind = event["EventType"]
        if kind == EventType.TASK_SCHEDULED:
            actions.append(
                {"id": event["EventId"], "kind": "task", "name": event["Name"], "input": activity_input(event)}
            )
        elif kind == EventType.TIMER_CREATED:
            actions.append({"id": event["EventId"], "kind": "timer", "fireAt": event["FireAt"]})
        elif kind == EventType.SUB_ORCHESTRATION_CREATED:
            actions.append(
                {
                    "id": event["EventId"],
                    "kind": "suborch",
                    "name": event["Name"],
                    "input": json.loads(event["Input"]),
                    "instanceId": event["InstanceId"],
                }
            )
    return actions


def test_golden_files_are_present() -> None:
    assert len(GOLDEN) >= 10


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_history_replays_to_identical_actions(path: Path, registry: Registry) -> None:
    recorded = json.loads(path.read_text(encoding="utf-8"))
    report = replay_history(registry, recorded["history"])
    assert report.ok, report.problems
    assert report.new_actions == []
    assert report.scheduled == _recorded_actions(recorded["history"])
    if recorded["runtimeStatus"] == "Completed":
        assert report.outcome == "completed"
        assert report.output == recorded["output"]
    elif recorded["runtimeStatus"] == "Failed":
        assert report.outcome == "failed" and report.output == recorded["output"]


def test_golden_replay_catches_a_code_change(registry: Registry) -> None:
    recorded = json.loads((Path(__file__).parent / "golden" / "changing.json").read_text(encoding="utf-8"))
    features.VARIANT["activity"] = "square"
    try:
        report = replay_history(registry, recorded["history"])
    finally:
        features.VARIANT["activity"] = "hello"
    assert not report.ok
    assert report.problems[0].startswith("Non-Deterministic workflow detected: ")
    with pytest.raises(ReplayMismatchError, match="named 'square'"):
        report.raise_for_problems()


def test_truncated_history_replays_as_still_running(registry: Registry) -> None:
    history = json.loads((Path(__file__).parent / "golden" / "chain.json").read_text(encoding="utf-8"))["history"]
    cut = next(i for i, e in enumerate(history) if e["EventType"] == EventType.TASK_COMPLETED)
    report = replay_history(registry, history[:cut])  # up to the first episode's end
    assert report.ok and report.outcome == "running" and report.new_actions == []


def test_harness_replay_matches_module_function() -> None:
    host = LocalHost(FEATURES)  # replay needs no running host
    recorded = json.loads(GOLDEN[0].read_text(encoding="utf-8"))
    assert host.replay(recorded["history"]).ok
