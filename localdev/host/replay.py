"""Replay a recorded history against the current orchestrator code and say whether it still fits.

A history "replays to identical actions" when DTFx would accept it (no non-determinism, no shim
fault), the code asks for nothing the history lacks, and the recorded ending (completed with
this output, failed with this reason, still running) comes out again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localdev.host import history as h
from localdev.host.episode import (
    EpisodeRequest,
    ExtensionSettings,
    build_context,
    call_orchestrator,
    decide,
    parse_jtoken,
)
from localdev.host.registry import Registry
from localdev.host.shim import KnownFunctions

_ENDINGS = {
    h.OrchestrationStatus.COMPLETED: "completed",
    h.OrchestrationStatus.FAILED: "failed",
    h.OrchestrationStatus.CONTINUED_AS_NEW: "continued_as_new",
    h.OrchestrationStatus.TERMINATED: "running",  # the code was still running when it was stopped
}


class ReplayMismatchError(AssertionError):
    """Raised by ``LocalHost.check_replay`` when current code no longer fits a history."""


@dataclass
class ReplayReport:
    orchestrator: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    outcome: str = "running"
    output: Any = None
    new_actions: list[dict[str, Any]] = field(default_factory=list)
    scheduled: list[dict[str, Any]] = field(default_factory=list)
    sdk_state: dict[str, Any] | None = None

    def raise_for_problems(self) -> ReplayReport:
        if not self.ok:
            raise ReplayMismatchError(f"replay of {self.orchestrator!r} diverged:\n- " + "\n- ".join(self.problems))
        return self


def replay_history(
    registry: Registry,
    events: list[h.Event],
    orchestrator: str | None = None,
    *,
    settings: ExtensionSettings | None = None,
) -> ReplayReport:
    """Run the orchestrator over ``events`` (all played) exactly as a final episode would."""
    settings = settings or ExtensionSettings()
    started = next((e for e in events if e["EventType"] == h.EventType.EXECUTION_STARTED), None)
    if started is None:
        raise ValueError("a history to replay needs an ExecutionStarted event")
    name = orchestrator or str(started["Name"])
    info = registry.orchestrator(name)
    if info is None:
        raise ValueError(f"the app has no orchestrator named {name!r}")
    instance = started.get("OrchestrationInstance") or {}
    parent = (started.get("ParentInstance") or {}).get("OrchestrationInstance") or {}
    request = EpisodeRequest(
        str(instance.get("InstanceId", "replay")),
        str(instance.get("ExecutionId", "replay")),
        name,
        parent.get("InstanceId"),
        list(events),
        [],
    )
    known = KnownFunctions.of(registry.activities, registry.orchestrators)
    call = call_orchestrator(info.user_function, info.trigger_param, build_context(request, settings))
    outcome = decide(request, call, known=known, settings=settings)
    shim = outcome.shim
    report = ReplayReport(
        name,
        ok=True,
        outcome=outcome.kind,
        output=parse_jtoken(outcome.result) if outcome.kind == "completed" else outcome.result,
        new_actions=[a.describe() for a in outcome.new_actions],
        scheduled=[a.describe() for a in shim.scheduled] if shim else [],
        sdk_state=outcome.sdk_state,
    )
    if shim and shim.nondeterminism:
        report.problems.append(shim.nondeterminism)
    elif shim and shim.fault:
        report.problems.append(f"the extension would fail replay: {shim.fault}")
    if outcome.new_actions:
        report.problems.append(f"replay schedules actions the history does not have: {report.new_actions}")
    recorded = next((e for e in reversed(events) if e["EventType"] == h.EventType.EXECUTION_COMPLETED), None)
    _compare_ending(report, recorded, outcome.kind, outcome.result)
    report.ok = not report.problems
    return report


def _compare_ending(report: ReplayReport, recorded: h.Event | None, kind: str, result: str | None) -> None:
    if recorded is None:
        if kind != "running" and not report.problems:
            report.problems.append(f"the history is still running, but replay ends it as {kind}")
        return
    status = h.OrchestrationStatus(recorded["OrchestrationStatus"])
    expected = _ENDINGS.get(status, status.name.lower())
    if kind != expected:
        report.problems.append(f"the history ended {expected}, replay ends {kind}")
    elif expected != "running" and parse_jtoken(recorded.get("Result")) != parse_jtoken(result):
        report.problems.append(f"the history ended with {recorded.get('Result')!r}, replay with {result!r}")
