"""The demo end to end: a small fleet through the real app on the twin and the local host."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localdev import demo
from localdev.demo_fleet import build_fleet


def _run(tmp_path: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "summary.json"
    code = demo.main(["--plain", "--json", str(out), *args])
    return code, json.loads(out.read_text())


def test_a_small_mixed_fleet_reaches_every_expected_outcome(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "demo.sqlite"
    code, summary = _run(tmp_path, "--vms", "6", "--seed", "11", "--db", str(db))
    printed = capsys.readouterr().out

    assert code == 0 and summary["ok"] is True and summary["ended"] == "finished"
    fleet = build_fleet(6, 11)
    assert [vm["name"] for vm in summary["vms"]] == [spec.name for spec in fleet.vms]
    for vm in summary["vms"]:
        assert vm["actual"] == vm["expected"], vm
    expected = {vm["expected"] for vm in summary["vms"]}
    assert {"released", "failed/policy_denied", "skipped/not_confidential_vm", "failed/no_managed_identity"} <= expected

    released = [vm for vm in summary["vms"] if vm["actual"] == "released"]
    assert released
    for vm in released:
        # the release cannot precede the grant taking effect, and the app noticed it promptly
        assert vm["propagation_seconds"] >= vm["rbac_delay_seconds"]
        assert vm["release_attempts"] >= 1
    # duplicates were delivered by the twin, yet every VM got exactly one onboarding
    counts = summary["counts"]
    assert counts["duplicate_events"] > 0
    assert counts["write_events_delivered"] == counts["write_events_emitted"] == 6 + counts["duplicate_events"]
    assert len({vm["instance_id"] for vm in summary["vms"]}) == 6
    # one result event per VM, of the matching type
    assert summary["published_events"]["count"] == 6
    by_type = summary["published_events"]["by_type"]
    assert by_type.get("SkrOrchestrator.Onboarding.Succeeded") == len(released)
    assert summary["propagation"]["n"] == len(released)
    # the Durable store was kept, and the rendered summary names every VM
    assert db.stat().st_size > 0
    assert "every VM reached its expected outcome" in printed
    assert all(vm["name"] in printed for vm in summary["vms"])


def test_the_same_seed_gives_the_same_fleet_and_rbac_delays(tmp_path: Path) -> None:
    first = tmp_path / "a"
    second = tmp_path / "b"
    first.mkdir()
    second.mkdir()
    _, a = _run(first, "--vms", "3", "--seed", "5")
    _, b = _run(second, "--vms", "3", "--seed", "5")
    pick = [(vm["name"], vm["kind"], vm["rbac_delay_seconds"]) for vm in a["vms"]]
    assert pick == [(vm["name"], vm["kind"], vm["rbac_delay_seconds"]) for vm in b["vms"]]
    assert any(delay is not None for _, _, delay in pick)


def test_bad_options_stop_before_anything_starts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "old.sqlite"
    existing.write_bytes(b"keep me")
    with pytest.raises(SystemExit) as exc:
        demo.main(["--db", str(existing)])
    assert exc.value.code == 2
    assert existing.read_bytes() == b"keep me"
    assert "already exists" in capsys.readouterr().err
    for argv, message in ((["--vms", "0"], "at least 1"), (["--speed", "0"], "positive"),
                          (["--json", str(tmp_path / "missing" / "s.json")], "does not exist")):
        with pytest.raises(SystemExit):
            demo.main(argv)
        assert message in capsys.readouterr().err


def test_serve_keeps_the_api_up_for_the_readme_curl_examples_until_sigterm(tmp_path: Path) -> None:
    import re
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "localdev", "demo", "--vms", "2", "--seed", "3", "--plain",
                             "--serve"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if "The app is serving" in line:
                break
        match = re.search(r"BASE=(\S+) KEY=(\S+)", "".join(lines))
        assert match, "".join(lines)[-2000:]
        base, key = match.groups()
        request = urllib.request.Request(f"{base}/onboardings?outcome=released", headers={"x-functions-key": key})
        with urllib.request.urlopen(request, timeout=30) as response:
            page = json.loads(response.read())
        assert page["items"] and all(item["outcome"] == "released" for item in page["items"])
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/onboardings", timeout=30)
        assert refused.value.code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
