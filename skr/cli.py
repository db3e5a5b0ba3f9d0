"""``python -m skr policy lint|eval``: the release-policy dry run no Azure tool offers.

Exit codes: 0 clean/allowed, 1 lint errors/denied, 2 usage errors (bad arguments, unreadable or
malformed input files).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from skr.policy import LintReport, ReleaseDecision, evaluate_policy, lint_policy

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments or unreadable input: exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m skr", description="SKR Orchestrator tools")
    commands = parser.add_subparsers(dest="command", required=True)
    policy = commands.add_parser("policy", help="key release policy tools")
    actions = policy.add_subparsers(dest="action", required=True)

    lint = actions.add_parser("lint", help="check a release policy (JSON or base64url) for errors and pitfalls")
    lint.add_argument("file", help="policy file, or - for stdin")
    lint.add_argument("--strict", action="store_true", help="treat warnings as errors (exit 1)")
    lint.add_argument("--json", action="store_true", help="print the findings as JSON")

    evaluate = actions.add_parser("eval", help="decide whether a token's claims would release the key")
    evaluate.add_argument("--policy", required=True, help="policy file (JSON or base64url), or -")
    evaluate.add_argument("--claims", required=True, help="decoded token claims JSON (or a compact JWT), or -")
    evaluate.add_argument("--issuer", help="override the token's iss claim")
    evaluate.add_argument("--json", action="store_true", help="print the decision as JSON")
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage message
        return EXIT_OK if exc.code in (0, None) else EXIT_USAGE
    try:
        if args.action == "lint":
            return _lint(args, out)
        return _eval(args, out, err)
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _lint(args: argparse.Namespace, out: TextIO) -> int:
    report = lint_policy(_read(args.file))
    failed = bool(report.errors) or (args.strict and bool(report.warnings))
    if args.json:
        print(json.dumps(_report_json(report), indent=2), file=out)
    else:
        _print_report(args.file, report, out)
    return EXIT_FAILED if failed else EXIT_OK


def _report_json(report: LintReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "issues": [issue.model_dump(mode="json") for issue in report.issues],
        "policy": report.policy.to_json() if report.policy else None,
    }


def _print_report(name: str, report: LintReport, out: TextIO) -> None:
    errors, warnings = len(report.errors), len(report.warnings)
    if not report.issues and report.policy is not None:
        conditions = sum(1 for _ in report.policy.claim_conditions())
        print(
            f"{name}: clean ({len(report.policy.authorities)} authority rule(s), {conditions} claim condition(s))",
            file=out,
        )
        return
    print(f"{name}: {errors} error(s), {warnings} warning(s)", file=out)
    for issue in report.issues:
        print(f"  {issue.severity.value:<7} {issue.path}: {issue.message} [{issue.code}]", file=out)


def _eval(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    report = lint_policy(_read(args.policy))
    if report.policy is None:
        _print_report(args.policy, report, err)
        return EXIT_FAILED
    claims = _claims(_read(args.claims), args.claims, err)
    decision = evaluate_policy(report.policy, claims, issuer=args.issuer)
    if args.json:
        print(json.dumps(decision.model_dump(mode="json"), indent=2), file=out)
    else:
        _print_decision(decision, out)
        for issue in report.warnings:
            print(f"warning: {issue.path}: {issue.message}", file=err)
    return EXIT_OK if decision.allowed else EXIT_FAILED


def _claims(data: bytes, name: str, err: TextIO) -> dict[str, Any]:
    text = data.strip()
    if text.startswith(b"eyJ") and text.count(b".") == 2:
        payload = text.split(b".")[1]
        try:
            text = base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4))
        except (binascii.Error, ValueError) as exc:
            raise UsageError(f"{name}: the JWT payload is not base64url") from exc
        print(f"note: {name}: read the claims of a compact JWT without verifying its signature", file=err)
    try:
        claims = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{name}: not valid JSON ({exc})") from exc
    if not isinstance(claims, dict):
        raise UsageError(f"{name}: the claims must be a JSON object, got {type(claims).__name__}")
    return claims


def _print_decision(decision: ReleaseDecision, out: TextIO) -> None:
    if decision.allowed:
        print(f"ALLOWED  by authority {decision.matched_authority}", file=out)
        return
    print(f"DENIED   {decision.reason.value}", file=out)
    if decision.unmet:
        print(f"  authority {decision.matched_authority}; unmet claim conditions:", file=out)
        for unmet in decision.unmet:
            actual = json.dumps(unmet.actual) if unmet.found and unmet.actual is not None else "-"
            print(
                f"  - {unmet.claim} {unmet.operator.value} {json.dumps(unmet.expected)}: "
                f"actual {actual} ({unmet.reason}) at {unmet.path}",
                file=out,
            )
    else:
        print(f"  {decision.summary()}", file=out)
