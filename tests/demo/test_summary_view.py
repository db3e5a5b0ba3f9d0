"""The demo's verdict and its rendering, from known per-VM outcomes."""

from __future__ import annotations

import io
import json

from rich.console import Console

from localdev.demo_fleet import VmKind, VmSpec
from localdev.demo_summary import VmOutcome, build_summary, outcome_label
from localdev.demo_view import ProgressReporter, ProgressRow, progress_table, summary_renderable


def _spec(name: str, kind: VmKind, duplicates: int = 1) -> VmSpec:
    return VmSpec(name=name, resource_group="rg", kind=kind, create_offset_s=0.0, duplicates=duplicates)


def test_outcome_labels_follow_the_onboarding_result() -> None:
    assert outcome_label({"outcome": "released"}) == "released"
    assert outcome_label({"outcome": "failed", "failure_code": "policy_denied"}) == "failed/policy_denied"
    assert outcome_label({"outcome": "skipped", "skip_reason": "not_confidential_vm"}) == "skipped/not_confidential_vm"
    assert outcome_label(None) == "missing"
    assert outcome_label(None, "Failed") == "no_result/failed"


def _outcomes() -> list[VmOutcome]:
    return [
        VmOutcome(_spec("cvm-a", VmKind.COMPLIANT), "/vm/a", "released", propagation_seconds=40.0, drawn_delay_s=30.0),
        VmOutcome(_spec("cvm-b", VmKind.COMPLIANT), "/vm/b", "released", propagation_seconds=20.0, drawn_delay_s=12.0),
        VmOutcome(_spec("tl-c", VmKind.TRUSTED_LAUNCH, 0), "/vm/c", "skipped/not_confidential_vm"),
    ]


def test_summary_counts_statistics_and_verdict() -> None:
    summary = build_summary(_outcomes(), [{"type": "SkrOrchestrator.Onboarding.Succeeded"}] * 2,
                            seed=3, clock="virtual", simulated_seconds=95.04, wall_seconds=1.234)
    assert summary["ok"] is True
    assert summary["counts"]["as_expected"] == 3
    assert summary["counts"]["write_events_emitted"] == 5 and summary["counts"]["duplicate_events"] == 2
    assert summary["counts"]["write_events_delivered"] == 5
    assert summary["counts"]["by_outcome"] == {"released": 2, "skipped/not_confidential_vm": 1}
    assert summary["propagation"]["p50_s"] == 30.0 and summary["propagation"]["max_s"] == 40.0
    assert summary["detection_lag"]["max_s"] == 10.0
    assert summary["published_events"]["by_type"] == {"SkrOrchestrator.Onboarding.Succeeded": 2}
    vm = summary["vms"][0]
    assert {k: vm[k] for k in ("vm_id", "expected", "actual", "propagation_seconds")} == {
        "vm_id": "/vm/a", "expected": "released", "actual": "released", "propagation_seconds": 40.0}
    json.dumps(summary)  # the --json file is plain JSON


def test_one_unexpected_outcome_fails_the_verdict_and_is_named() -> None:
    outcomes = [*_outcomes(), VmOutcome(_spec("cvm-d", VmKind.NONCOMPLIANT), "/vm/d", "released")]
    summary = build_summary(outcomes, [], seed=0, clock="virtual", simulated_seconds=1, wall_seconds=1)
    assert summary["ok"] is False
    assert summary["mismatched"] == ["cvm-d"]
    assert build_summary([], [], seed=0, clock="virtual", simulated_seconds=0, wall_seconds=0)["ok"] is False


def _render(renderable: object, *, terminal: bool = False) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=160, force_terminal=terminal, color_system=None).print(renderable)
    return buffer.getvalue()


def test_progress_table_shows_stage_attempt_and_time_since_assignment() -> None:
    rows = [ProgressRow("cvm-a", "compliant_cvm", "released", stage="waiting_for_rbac", attempt=2,
                        since_assignment_s=75.0),
            ProgressRow("tl-c", "trusted_launch_vm", "skipped/not_confidential_vm", stage="completed",
                        outcome="skipped/not_confidential_vm")]
    text = _render(progress_table(rows, "virtual +1m15s"))
    assert "waiting_for_rbac" in text and "1m15s" in text and "✓ skipped/not_confidential_vm" in text


def test_summary_renders_outcomes_events_and_figures() -> None:
    summary = build_summary(_outcomes(), [], seed=3, clock="virtual", simulated_seconds=95, wall_seconds=1)
    events = [{"type": "SkrOrchestrator.Onboarding.Succeeded", "subject": "/x/virtualMachines/cvm-a",
               "data": {"outcome": "released"}}]
    text = _render(summary_renderable(summary, events))
    assert "cvm-a" in text and "SkrOrchestrator.Onboarding.Succeeded" in text
    assert "3/3" in text and "every VM reached its expected outcome" in text
    assert "✓ released" in text


def test_without_a_terminal_progress_prints_one_line_per_change() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, force_terminal=False)
    rows = [ProgressRow("cvm-a", "compliant_cvm", "released", stage="waiting_for_rbac")]
    with ProgressReporter(console, min_interval=0.0) as reporter:
        reporter.update(rows, "t+10s")
        reporter.update(rows, "t+20s")  # same counts: no new line
        reporter.update([ProgressRow("cvm-a", "compliant_cvm", "released", outcome="released")], "t+30s")
    lines = buffer.getvalue().splitlines()
    assert lines == ["[t+10s] waiting_for_rbac 1", "[t+30s] released 1"]


def test_plain_progress_is_rate_limited_but_always_ends_with_the_last_state() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, force_terminal=False)
    with ProgressReporter(console, min_interval=3600.0) as reporter:
        reporter.update([ProgressRow("a", "k", "released", stage="ensuring_key")], "t+1s")
        reporter.update([ProgressRow("a", "k", "released", stage="releasing")], "t+2s")  # too soon: held back
        reporter.update([ProgressRow("a", "k", "released", outcome="released")], "t+3s")
    assert buffer.getvalue().splitlines() == ["[t+1s] ensuring_key 1", "[t+3s] released 1"]
