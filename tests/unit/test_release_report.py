"""The SKR-RESULT parser: noise, truncation, repeats, oversize and malformed lines, and no leaks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skr.models import ReleaseOutcome
from skr.release_report import (
    MAX_LINE_BYTES,
    OUTPUT_LIMIT_BYTES,
    ReleaseReportError,
    ReportProblem,
    parse_release_output,
)

KID = "https://vault-a.vault.azure.net/keys/cvm-web-01/0123456789abcdef0123456789abcdef"
FAKE_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ2bSIsImF1ZCI6Imt2In0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"


def result(**overrides: object) -> str:
    fields: dict[str, object] = {
        "schema": 1,
        "outcome": "released",
        "exit_code": 0,
        "retryable": False,
        "mode": "rest",
        "key_id": KID,
        "key_thumbprint": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
        "kty": "RSA-HSM",
        "enc": "CKM_RSA_AES_KEY_WRAP",
        "http_status": 200,
        "error_code": None,
        "message": None,
        "attempts": 3,
        "elapsed_seconds": 12.5,
        "stored_path": "/var/lib/skr-orchestrator/keys/cvm-web-01.jws",
        "stored_sha256": "ab" * 32,
        "script_version": "1.0",
    }
    fields.update(overrides)
    return "SKR-RESULT " + json.dumps(fields, separators=(",", ":"))


def linux_output(stdout: str, stderr: str = "") -> str:
    """The Linux agent's framing of run-command output."""
    return f"Enable succeeded: \n[stdout]\n{stdout}\n\n[stderr]\n{stderr}\n"


def test_released_line_maps_every_field() -> None:
    report = parse_release_output(linux_output(result()))
    assert report.outcome is ReleaseOutcome.RELEASED
    assert report.key_id == KID
    assert report.key_thumbprint == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert report.http_status == 200
    assert report.attempts == 3
    assert report.elapsed_seconds == 12.5
    assert report.exit_code == 0
    assert report.detail is None


def test_failure_line_keeps_code_and_scrubbed_message() -> None:
    line = result(
        outcome="forbidden_by_rbac",
        exit_code=2,
        http_status=403,
        error_code="ForbiddenByRbac",
        message=f"Caller is not authorized; token {FAKE_JWT}",
        key_thumbprint=None,
    )
    report = parse_release_output(linux_output("attempt 1: 403\nattempt 2: 403\n" + line, "some stderr noise"))
    assert report.outcome is ReleaseOutcome.FORBIDDEN_BY_RBAC
    assert report.error_code == "ForbiddenByRbac"
    assert report.http_status == 403
    assert report.detail is not None and "Caller is not authorized" in report.detail
    assert FAKE_JWT not in report.model_dump_json()


@pytest.mark.parametrize("outcome", [o.value for o in ReleaseOutcome])
def test_every_script_outcome_parses(outcome: str) -> None:
    assert parse_release_output(result(outcome=outcome)).outcome.value == outcome


def test_last_valid_line_wins_over_earlier_ones() -> None:
    first = result(outcome="forbidden_by_rbac", exit_code=2)
    last = result(outcome="released")
    assert parse_release_output(f"{first}\nnoise\n{last}\n").outcome is ReleaseOutcome.RELEASED


def test_invalid_last_line_falls_back_to_an_earlier_valid_one() -> None:
    valid = result(outcome="policy_denied", exit_code=3)
    output = f"{valid}\nSKR-RESULT {{not json\n"
    assert parse_release_output(output).outcome is ReleaseOutcome.POLICY_DENIED


def test_windows_crlf_output_and_leading_whitespace() -> None:
    output = "Starting...\r\n   " + result() + "\r\n"
    assert parse_release_output(output).outcome is ReleaseOutcome.RELEASED


def test_bytes_input_is_accepted() -> None:
    assert parse_release_output(linux_output(result()).encode()).key_id == KID


def test_only_the_last_4096_bytes_count_and_a_cut_line_is_dropped() -> None:
    # An early valid line pushed out of the window must not be used; the line cut in half at the
    # window's start must not be half-parsed either.
    early = result(outcome="released")
    filler = "x" * (OUTPUT_LIMIT_BYTES + 100)
    late = result(outcome="imds_failed", exit_code=2)
    report = parse_release_output(f"{early}\n{filler}\n{late}\n")
    assert report.outcome is ReleaseOutcome.IMDS_FAILED
    with pytest.raises(ReleaseReportError) as caught:
        parse_release_output(f"{early}\n{filler}\n")
    assert caught.value.problem is ReportProblem.MISSING


def test_result_line_cut_at_the_window_start_is_not_used() -> None:
    line = result()
    padding = "y" * (OUTPUT_LIMIT_BYTES - len(line) // 2)
    output = line + "\n" + padding  # the window starts inside `line`
    with pytest.raises(ReleaseReportError) as caught:
        parse_release_output(output)
    assert caught.value.problem is ReportProblem.MISSING


@pytest.mark.parametrize("output", [None, "", "Enable succeeded: \n[stdout]\n\n[stderr]\n", "SKR-RESULTX {}"])
def test_missing_line(output: str | None) -> None:
    with pytest.raises(ReleaseReportError, match="no SKR-RESULT line") as caught:
        parse_release_output(output)
    assert caught.value.problem is ReportProblem.MISSING


def test_oversize_line_is_a_clear_error_without_the_content() -> None:
    line = result(message="A" * (MAX_LINE_BYTES + 10))
    with pytest.raises(ReleaseReportError) as caught:
        parse_release_output(line)
    assert caught.value.problem is ReportProblem.OVERSIZE
    assert f"{MAX_LINE_BYTES}-byte limit" in str(caught.value)
    assert "AAAA" not in str(caught.value)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("SKR-RESULT", "no JSON payload"),
        (f'SKR-RESULT {{"outcome": "released", "key_id": "{FAKE_JWT}"', "not JSON"),
        ("SKR-RESULT [1, 2]", "JSON list"),
        (result(outcome=FAKE_JWT), "outcome: Value error, outcome is not a lower-case identifier"),
        (result(key_id=FAKE_JWT), "key_id: Value error, key_id is not a Key Vault key URL"),
        (result(key_thumbprint=FAKE_JWT + FAKE_JWT), "key_thumbprint"),
        (result(error_code="has spaces and " + FAKE_JWT), "error_code"),
        (result(http_status=1000), "http_status"),
        (result(attempts=-1), "attempts"),
        ('SKR-RESULT {"key_id": null}', "outcome: Field required"),
    ],
)
def test_malformed_lines_name_the_problem_but_never_quote_it(line: str, why: str) -> None:
    with pytest.raises(ReleaseReportError) as caught:
        parse_release_output(linux_output(line))
    assert caught.value.problem is ReportProblem.MALFORMED
    assert why in str(caught.value)
    assert FAKE_JWT not in str(caught.value)
    assert "eyJ" not in str(caught.value)


def test_an_unknown_outcome_is_terminal_and_keeps_its_error_code() -> None:
    report = parse_release_output(result(outcome="quantum_failure", exit_code=2, error_code="qf_1", message="odd"))
    assert report.outcome is ReleaseOutcome.INTERNAL_ERROR
    assert report.exit_code == 3
    assert report.error_code == "qf_1"
    assert report.detail == "unrecognised outcome 'quantum_failure': odd"


def test_several_bad_lines_report_the_count() -> None:
    with pytest.raises(ReleaseReportError, match="2 SKR-RESULT lines"):
        parse_release_output("SKR-RESULT {\nSKR-RESULT []\n")


@settings(max_examples=200, deadline=None)
@given(
    noise=st.text(min_size=0, max_size=3000), secret=st.from_regex(r"eyJ[A-Za-z0-9]{8}\.[A-Za-z0-9]{8}\.[A-Za-z0-9]{8}")
)
def test_noise_never_leaks_into_errors_or_reports(noise: str, secret: str) -> None:
    output = f"{noise}\n{secret}\nSKR-RESULT {secret}\n{noise}"
    try:
        report = parse_release_output(output)
    except ReleaseReportError as exc:
        assert secret not in str(exc)
        return
    assert secret not in report.model_dump_json()


@settings(max_examples=100, deadline=None)
@given(before=st.text(max_size=1500), after=st.text(max_size=1500).filter(lambda t: "SKR-RESULT" not in t))
def test_a_valid_line_surrounded_by_noise_is_found(before: str, after: str) -> None:
    output = f"{before}\n{result()}\n{after}"
    assert parse_release_output(output).key_id == KID
