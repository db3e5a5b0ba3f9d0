"""The Windows port cannot run here (no PowerShell): check its syntax and its parity with the Linux script.

Parity is checked on what the orchestrator depends on: parameter names, outcomes, error codes, exit
codes, result keys (in order) and the retry constants; the README must document every outcome and
error code either script can report.
"""

from __future__ import annotations

import ast
import re

import pytest
import tree_sitter
import tree_sitter_powershell

from tests.vm_scripts.helpers import LINUX_SCRIPT, ROOT, WINDOWS_SCRIPT, load_script

S = load_script()
PY = LINUX_SCRIPT.read_text()
PS = WINDOWS_SCRIPT.read_text()
README = (ROOT / "vm_scripts" / "README.md").read_text()


def syntax_errors(source: bytes) -> list[tuple[int, int]]:
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    found: list[tuple[int, int]] = []
    stack = [parser.parse(source).root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            found.append(node.start_point)
        stack.extend(node.children)
    return found


def test_powershell_parses_without_errors():
    assert syntax_errors(WINDOWS_SCRIPT.read_bytes()) == []


@pytest.mark.parametrize("breakage", ["function Broken( {", "if ($x -eq 1 { 'a' }", "$h = @{ a = 1 "])
def test_the_syntax_check_does_catch_errors(breakage):
    assert syntax_errors((PS + "\n" + breakage + "\n").encode()) != []


def ps_value(name: str) -> str:
    match = re.search(rf"^\${name} = (.+)$", PS, re.M)
    assert match, name
    return match.group(1).strip()


def ps_list(name: str) -> list[str]:
    return [item.strip().strip("'") for item in ps_value(name).removeprefix("@(").removesuffix(")").split(",")]


def test_same_parameters():
    py_params = set(re.findall(r'"(SKR_[A-Z_]+)"', PY)) - {"SKR_TRACE_ON"}
    ps_params = set(re.findall(r"\[string\]\$(SKR_[A-Z_]+) = \$env:\1", PS))
    assert py_params == ps_params
    assert all(f"`{name}`" in README for name in py_params)


def test_same_constants():
    assert ps_value("SCRIPT_VERSION") == f"'{S.SCRIPT_VERSION}'"
    assert ps_value("RESULT_PREFIX") == f"'{S.RESULT_PREFIX}'"
    assert int(ps_value("MAX_RESULT_BYTES")) == S.MAX_RESULT_BYTES
    assert [int(ps_value(n)) for n in ("EXIT_RELEASED", "EXIT_RETRYABLE", "EXIT_TERMINAL")] == [0, 2, 3]
    assert (S.EXIT_RELEASED, S.EXIT_RETRYABLE, S.EXIT_TERMINAL) == (0, 2, 3)
    assert tuple(ps_list("ENC_VALUES")) == S.ENC_VALUES
    assert tuple(ps_list("MODES")) == S.MODES
    assert ps_value("KEK_KID") == f"'{S.KEK_KID}'"
    assert ps_value("IMDS_API_VERSION") == f"'{S.IMDS_API_VERSION}'"
    assert float(ps_value("RETRY_FIRST_DELAY")) == S.RETRY_FIRST_DELAY
    assert float(ps_value("RETRY_MAX_DELAY")) == S.RETRY_MAX_DELAY
    assert tuple(float(x) for x in ps_list("IMDS_DELAYS")) == S.IMDS_DELAYS
    assert tuple(int(x) for x in ps_list("IMDS_RETRY_STATUSES")) == S.IMDS_RETRY_STATUSES
    assert float(ps_value("TOKEN_MIN_REMAINING")) == S.TOKEN_MIN_REMAINING
    assert float(ps_value("HTTP_TIMEOUT")) == S.HTTP_TIMEOUT
    assert tuple(ps_list("RETRYABLE_OUTCOMES")) == S.RETRYABLE_OUTCOMES
    assert ps_value("SECRETISH").strip("'") == S._SECRETISH.pattern
    assert S.DEFAULT_ATTESTATION_COMMAND.replace("AttestationClient", "AttestationClientApp.exe") \
        == ps_value("DEFAULT_ATTESTATION_COMMAND").strip("'")


def py_failures() -> set[tuple[str, str]]:
    """(outcome, error_code) literals of every SkrError the Linux script can raise."""
    found = set(re.findall(r'SkrError\(\s*"([a-z_]+)",\s*"([A-Za-z_%d]+)"', PY))
    found |= {("jws_invalid", code) for code in re.findall(r'VerifyError\("([a-z_]+)"', PY)}
    found |= {("invalid_parameters", code) for code in ("missing_parameter", "invalid_parameter")}
    return found


def ps_failures() -> set[tuple[str, str]]:
    found = set(re.findall(r"New-SkrError '([a-z_]+)' \(?'([A-Za-z_{}0]+)'", PS))
    found |= set(re.findall(r"New-SkrError -Outcome '([a-z_]+)' -ErrorCode '([a-z_]+)'", PS))
    found |= {("jws_invalid", code) for code in re.findall(r"New-VerifyError '([a-z_]+)'", PS)}
    found |= {("invalid_parameters", code) for code in re.findall(r"New-ParamError '([a-z_]+)'", PS)}
    found |= {("jws_invalid", code) for code in re.findall(r'return "(jws_[a-z_]+)";', PS)}  # C# chain helper
    return {(o, c.replace("{0}", "%d")) for o, c in found}


def test_same_outcomes_and_error_codes():
    py, ps = py_failures(), ps_failures()
    assert len(py) > 30
    # classify_release_error's outcomes are computed from Key Vault's codes: compare them as outcomes
    variable = {"forbidden_by_rbac", "key_not_found", "not_exportable", "policy_denied"}
    # .NET parses certificates itself: a malformed one is jws_malformed there, bad_der here
    linux_only = {("jws_invalid", "bad_der")}
    assert {c for c in py if c[0] not in variable} == {c for c in ps if c[0] not in variable} | linux_only
    for outcome in variable:
        assert f"SkrError(\"{outcome}\", error_code" in PY
        assert f"New-SkrError '{outcome}' $errorCode" in PS


def test_readme_documents_every_outcome_and_error_code():
    outcomes = {o for o, _ in py_failures()} | {"released", "forbidden_by_rbac", "policy_denied"}
    for outcome in outcomes:
        assert re.search(rf"^\| `{outcome}` \|", README, re.M), outcome
    for _, code in py_failures():
        assert f"`{code.replace('%d', '<n>')}`" in README, code


def test_same_result_keys_in_the_same_order():
    main = next(n for n in ast.parse(PY).body if isinstance(n, ast.FunctionDef) and n.name == "main")
    fields = next(n.value for n in ast.walk(main) if isinstance(n, ast.AnnAssign) and isinstance(n.value, ast.Dict))
    py_keys = [k.value for k in fields.keys]
    block = re.search(r"\$fields = \[ordered\]@\{(.*?)\n\}", PS, re.S)
    assert block
    ps_keys = re.findall(r"([a-z0-9_]+) = ", block.group(1))
    assert py_keys == ps_keys
    for key in py_keys:
        assert f"| `{key}` |" in README, key


def test_same_classification_order():
    """Both classifiers test the same Key Vault conditions in the same order."""
    py = re.findall(r'"(ForbiddenByRbac|KeyNotFound|exportable|cannot be verified|policy|attestation)"',
                    PY[PY.index("def classify_release_error"):PY.index("class Released")])
    ps = re.findall(r"'(ForbiddenByRbac|KeyNotFound|exportable|cannot be verified|policy|attestation)'",
                    PS[PS.index("function Get-ReleaseErrorClass"):PS.index("function Invoke-InWindow")])
    assert py == ps == ["ForbiddenByRbac", "KeyNotFound", "exportable", "cannot be verified", "policy",
                        "attestation"]
