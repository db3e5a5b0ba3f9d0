"""``python -m skr policy lint|eval``: output and exit codes (0 clean/allowed, 1 error/denied, 2 usage)."""

from __future__ import annotations

import base64
import io
import json
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

from skr.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from skr.policy import build_policy, encode_policy

from .guest_token import AUTHORITY, guest_claims


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, name: str, content: Any) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def test_lint_clean_policy(tmp_path: Path) -> None:
    code, out, _ = run("policy", "lint", write(tmp_path, "p.json", build_policy(AUTHORITY).to_json()))
    assert code == EXIT_OK
    assert "clean (1 authority rule(s), 2 claim condition(s))" in out


def test_lint_accepts_the_base64url_release_policy_data(tmp_path: Path) -> None:
    code, out, _ = run("policy", "lint", write(tmp_path, "p.b64", encode_policy(build_policy(AUTHORITY))))
    assert code == EXIT_OK and "clean" in out


def test_lint_errors_exit_1_and_list_each_error(tmp_path: Path) -> None:
    bad = {"version": "1.0.0", "anyOf": [{"authority": "http://maa", "allOf": [{"claim": "a", "equal": 1}]}]}
    code, out, _ = run("policy", "lint", write(tmp_path, "p.json", bad))
    assert code == EXIT_FAILED
    assert "2 error(s), 0 warning(s)" in out
    assert "anyOf[0].authority" in out and "[authority_not_https]" in out
    assert "anyOf[0].allOf[0].equal: unknown operator 'equal'" in out


def test_lint_warnings_pass_unless_strict(tmp_path: Path) -> None:
    pitfall = {
        "version": "1.0.0",
        "anyOf": [
            {"authority": AUTHORITY, "allOf": [{"claim": "x-ms-compliance-status", "equals": "azure-compliant-cvm"}]}
        ],
    }
    path = write(tmp_path, "p.json", pitfall)
    code, out, _ = run("policy", "lint", path)
    assert code == EXIT_OK and "[platform_claim_path]" in out
    assert run("policy", "lint", "--strict", path)[0] == EXIT_FAILED


def test_lint_json_output(tmp_path: Path) -> None:
    code, out, _ = run("policy", "lint", "--json", write(tmp_path, "p.json", {"version": "2"}))
    report = json.loads(out)
    assert code == EXIT_FAILED and report["ok"] is False and report["policy"] is None
    assert {i["code"] for i in report["issues"]} == {"unknown_version", "no_authority"}


def test_lint_of_non_json_is_a_lint_error(tmp_path: Path) -> None:
    code, out, _ = run("policy", "lint", write(tmp_path, "p.json", "{broken"))
    assert code == EXIT_FAILED and "[invalid_json]" in out


def test_eval_allowed(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", build_policy(AUTHORITY).to_json())
    code, out, _ = run("policy", "eval", "--policy", policy, "--claims", write(tmp_path, "c.json", guest_claims()))
    assert code == EXIT_OK
    assert out.startswith(f"ALLOWED  by authority {AUTHORITY}")


def test_eval_denied_names_each_unmet_claim(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", build_policy(AUTHORITY).to_json())
    claims = guest_claims({"x-ms-attestation-type": "tdxvm", "x-ms-compliance-status": None})
    code, out, _ = run("policy", "eval", "--policy", policy, "--claims", write(tmp_path, "c.json", claims))
    assert code == EXIT_FAILED
    assert "DENIED   claims_unmet" in out
    assert 'x-ms-isolation-tee.x-ms-attestation-type equals "sevsnpvm": actual "tdxvm" (value differs)' in out
    assert 'x-ms-isolation-tee.x-ms-compliance-status equals "azure-compliant-cvm": actual - (claim is missing)' in out


def test_eval_authority_mismatch_and_issuer_override(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", build_policy("https://sharedeus2.eus2.attest.azure.net").to_json())
    claims = write(tmp_path, "c.json", guest_claims())
    code, out, _ = run("policy", "eval", "--policy", policy, "--claims", claims)
    assert code == EXIT_FAILED and "authority_mismatch" in out and "sharedeus2" in out
    code, _, _ = run(
        "policy",
        "eval",
        "--policy",
        policy,
        "--claims",
        claims,
        "--issuer",
        "https://sharedeus2.eus2.attest.azure.net/",
    )
    assert code == EXIT_OK


def test_eval_json_output(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", build_policy(AUTHORITY).to_json())
    claims = write(tmp_path, "c.json", guest_claims({"x-ms-compliance-status": "nope"}))
    code, out, _ = run("policy", "eval", "--json", "--policy", policy, "--claims", claims)
    decision = json.loads(out)
    assert code == EXIT_FAILED and decision["allowed"] is False
    assert decision["unmet"][0]["actual"] == "nope"


def test_eval_reads_claims_from_a_compact_jwt(tmp_path: Path) -> None:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    jwt = f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(guest_claims())}.c2ln"
    policy = write(tmp_path, "p.json", build_policy(AUTHORITY).to_json())
    code, out, err = run("policy", "eval", "--policy", policy, "--claims", write(tmp_path, "t.jwt", jwt))
    assert code == EXIT_OK and "ALLOWED" in out
    assert "without verifying its signature" in err
    assert jwt not in out + err


def test_eval_with_an_invalid_policy_exits_1(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", {"version": "1.0.0", "anyOf": []})
    code, _, err = run("policy", "eval", "--policy", policy, "--claims", write(tmp_path, "c.json", guest_claims()))
    assert code == EXIT_FAILED and "[no_authority]" in err


def test_eval_prints_policy_warnings_to_stderr(tmp_path: Path) -> None:
    pitfall = {
        "version": "1.0.0",
        "anyOf": [{"authority": AUTHORITY, "allOf": [{"claim": "x-ms-compliance-status", "exists": True}]}],
    }
    code, _, err = run(
        "policy",
        "eval",
        "--policy",
        write(tmp_path, "p.json", pitfall),
        "--claims",
        write(tmp_path, "c.json", guest_claims()),
    )
    assert code == EXIT_FAILED and "warning: anyOf[0].allOf[0]" in err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["policy"],
        ["policy", "frobnicate"],
        ["policy", "eval", "--policy", "p.json"],
        ["policy", "lint"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    assert run(*argv)[0] == EXIT_USAGE


def test_help_exits_0() -> None:
    assert run("policy", "lint", "--help")[0] == EXIT_OK


def test_unreadable_or_malformed_inputs_exit_2(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", build_policy(AUTHORITY).to_json())
    code, _, err = run("policy", "lint", str(tmp_path / "missing.json"))
    assert code == EXIT_USAGE and "cannot read" in err
    code, _, err = run("policy", "eval", "--policy", policy, "--claims", write(tmp_path, "c.json", "{not json"))
    assert code == EXIT_USAGE and "not valid JSON" in err
    code, _, err = run("policy", "eval", "--policy", policy, "--claims", write(tmp_path, "l.json", "[1, 2]"))
    assert code == EXIT_USAGE and "must be a JSON object" in err
    code, _, err = run("policy", "eval", "--policy", policy, "--claims", write(tmp_path, "j.jwt", "eyJ!!.@@@.x"))
    assert code == EXIT_USAGE


def test_module_entry_point_reads_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    policy = json.dumps(build_policy(AUTHORITY).to_json()).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(policy)))
    monkeypatch.setattr(sys, "argv", ["python -m skr", "policy", "lint", "-"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("skr", run_name="__main__")
    assert info.value.code == 0
    assert "-: clean" in capsys.readouterr().out


def test_a_jwt_with_a_broken_payload_is_a_usage_error(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.json", build_policy(AUTHORITY).to_json())
    code, _, err = run("policy", "eval", "--policy", policy, "--claims", write(tmp_path, "t.jwt", "eyJhbGc.abcde.sig"))
    assert code == EXIT_USAGE and "not base64url" in err
