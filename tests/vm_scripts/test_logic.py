"""Pure parts of the Linux script: parameters, attestation output, classification, retries, result line."""

from __future__ import annotations

import ast
import json
import os
import stat
import time

import pytest

from tests.vm_scripts.helpers import LINUX_SCRIPT, b64url, load_script

S = load_script()
BASE = {"SKR_VAULT_URL": "https://v.vault.azure.net/", "SKR_KEY_NAME": "cvm-a",
        "SKR_MAA_ENDPOINT": "https://sharedweu.weu.attest.azure.net"}


def test_script_is_python38_syntax():
    source = LINUX_SCRIPT.read_text()
    ast.parse(source, feature_version=(3, 8))
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import)}
    imported |= {n.module.split(".")[0] for n in ast.walk(ast.parse(source))
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__"} <= set(__import__("sys").stdlib_module_names)


def test_time_is_only_read_through_the_time_module():
    """The twin virtualises time.time/monotonic/sleep only; nothing else may read the clock."""
    tree = ast.parse(LINUX_SCRIPT.read_text())
    uses = {f"{n.value.id}.{n.attr}" for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in ("time", "datetime")}
    assert uses == {"time.time", "time.monotonic", "time.sleep"}
    assert not any(isinstance(n, ast.ImportFrom) and n.module in ("time", "datetime") for n in ast.walk(tree))
    assert "datetime" not in LINUX_SCRIPT.read_text()


# ------------------------------------------------------------------------------ parameters
def test_defaults():
    p = S.load_params(BASE)
    assert p.vault_url == "https://v.vault.azure.net"
    assert p.maa_endpoint == "https://sharedweu.weu.attest.azure.net"
    assert (p.mode, p.retry_window, p.enc, p.api_version) == ("rest", 90.0, "CKM_RSA_AES_KEY_WRAP", "7.4")
    assert p.output_path == "/var/lib/skr-orchestrator/keys/cvm-a.jws"
    assert p.imds_url == "http://169.254.169.254"
    assert p.imds_resource == "https://vault.azure.net"
    assert p.ca_bundle == "" and p.key_version == ""
    assert p.attestation_command == ["AttestationClient", "-a", "{maa}", "-o", "token"]
    assert p.azureattestskr_command == ["AzureAttestSKR"]
    assert S.requested_key_id(p) == "https://v.vault.azure.net/keys/cvm-a"


def test_overrides(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    p = S.load_params({**BASE, "SKR_VAULT_URL": "https://127.0.0.1:8443", "SKR_KEY_VERSION": "abc123",
                       "SKR_MODE": "AzureAttestSKR", "SKR_RETRY_WINDOW_SECONDS": "0", "SKR_ENC": "RSA_AES_KEY_WRAP_384",
                       "SKR_OUTPUT_PATH": str(tmp_path / "k.jws"), "SKR_IMDS_URL": "http://127.0.0.1:9000/",
                       "SKR_CA_BUNDLE": str(bundle), "SKR_KEYVAULT_API_VERSION": "2025-07-01",
                       "SKR_ATTESTATION_COMMAND": "'/opt/my tools/ac' -a {maa} -o token",
                       "SKR_IMDS_CLIENT_ID": "0b6e2f0d-8a55-4d3b-9d4e-4a3c2f1e0d9c"})
    assert p.mode == "azureattestskr" and p.retry_window == 0.0
    assert S.requested_key_id(p) == "https://127.0.0.1:8443/keys/cvm-a/abc123"
    assert p.attestation_command[0] == "/opt/my tools/ac"
    assert p.imds_url == "http://127.0.0.1:9000"
    assert S.load_params({**BASE, "SKR_VAULT_URL": "https://h.managedhsm.azure.net"}).imds_resource \
        == "https://managedhsm.azure.net"
    assert S.load_params({**BASE, "SKR_MODE": "", "SKR_ENC": " "}).mode == "rest"  # empty = not given


@pytest.mark.parametrize(("env", "code", "name"), [
    ({"SKR_VAULT_URL": ""}, "missing_parameter", "SKR_VAULT_URL"),
    ({"SKR_KEY_NAME": None}, "missing_parameter", "SKR_KEY_NAME"),
    ({"SKR_MAA_ENDPOINT": "  "}, "missing_parameter", "SKR_MAA_ENDPOINT"),
    ({"SKR_VAULT_URL": "http://v.vault.azure.net"}, "invalid_parameter", "SKR_VAULT_URL"),
    ({"SKR_VAULT_URL": "v.vault.azure.net"}, "invalid_parameter", "SKR_VAULT_URL"),
    ({"SKR_VAULT_URL": "https://v.vault.azure.net/keys/x"}, "invalid_parameter", "SKR_VAULT_URL"),
    ({"SKR_VAULT_URL": "https://v.vault.azure.net?x=1"}, "invalid_parameter", "SKR_VAULT_URL"),
    ({"SKR_VAULT_URL": "https://user:pw@v.vault.azure.net"}, "invalid_parameter", "SKR_VAULT_URL"),
    ({"SKR_VAULT_URL": "https://v.vault.azure.net:99999"}, "invalid_parameter", "SKR_VAULT_URL"),
    ({"SKR_VAULT_URL": "https://bad host"}, "invalid_parameter", "SKR_VAULT_URL"),
    ({"SKR_VAULT_URL": "https://" + "a" * 300}, "invalid_parameter", "SKR_VAULT_URL"),
    ({"SKR_KEY_NAME": "../etc"}, "invalid_parameter", "SKR_KEY_NAME"),
    ({"SKR_KEY_NAME": "a" * 128}, "invalid_parameter", "SKR_KEY_NAME"),
    ({"SKR_KEY_VERSION": "v/1"}, "invalid_parameter", "SKR_KEY_VERSION"),
    ({"SKR_MAA_ENDPOINT": "ftp://maa"}, "invalid_parameter", "SKR_MAA_ENDPOINT"),
    ({"SKR_MODE": "sidecar"}, "invalid_parameter", "SKR_MODE"),
    ({"SKR_RETRY_WINDOW_SECONDS": "soon"}, "invalid_parameter", "SKR_RETRY_WINDOW_SECONDS"),
    ({"SKR_RETRY_WINDOW_SECONDS": "-1"}, "invalid_parameter", "SKR_RETRY_WINDOW_SECONDS"),
    ({"SKR_RETRY_WINDOW_SECONDS": "nan"}, "invalid_parameter", "SKR_RETRY_WINDOW_SECONDS"),
    ({"SKR_OUTPUT_PATH": "keys/a.jws"}, "invalid_parameter", "SKR_OUTPUT_PATH"),
    ({"SKR_OUTPUT_PATH": "/var/lib/x/"}, "invalid_parameter", "SKR_OUTPUT_PATH"),
    ({"SKR_ENC": "A256KW"}, "invalid_parameter", "SKR_ENC"),
    ({"SKR_IMDS_URL": "169.254.169.254"}, "invalid_parameter", "SKR_IMDS_URL"),
    ({"SKR_CA_BUNDLE": "/nonexistent/ca.pem"}, "invalid_parameter", "SKR_CA_BUNDLE"),
    ({"SKR_KEYVAULT_API_VERSION": "7.2"}, "invalid_parameter", "SKR_KEYVAULT_API_VERSION"),
    ({"SKR_ATTESTATION_COMMAND": "AttestationClient 'unterminated"}, "invalid_parameter", "SKR_ATTESTATION_COMMAND"),
    ({"SKR_IMDS_CLIENT_ID": "me"}, "invalid_parameter", "SKR_IMDS_CLIENT_ID"),
    ({"SKR_TOOL_TIMEOUT_SECONDS": "0"}, "invalid_parameter", "SKR_TOOL_TIMEOUT_SECONDS"),
])
def test_bad_parameters(env, code, name):
    merged = {k: v for k, v in {**BASE, **env}.items() if v is not None}
    with pytest.raises(S.ParamError) as err:
        S.load_params(merged)
    assert err.value.code == code
    assert err.value.text.startswith(name + ": ")
    for value in env.values():  # the value itself is never echoed
        if value and len(value.strip()) > 3:
            assert value.strip() not in err.value.text


def test_ca_bundle_needs_a_certificate(tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificates here\n")
    with pytest.raises(S.ParamError) as err:
        S.load_params({**BASE, "SKR_CA_BUNDLE": str(empty)})
    assert err.value.text.startswith("SKR_CA_BUNDLE: ")


# ---------------------------------------------------------------------- attestation output
def jwt(payload: dict, header: dict | None = None) -> str:
    head = b64url(json.dumps(header or {"alg": "RS256", "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(payload).encode())}.{b64url(b'sig')}"


def test_attestation_output_accepts_a_fresh_jwt():
    token = jwt({"exp": 2_000_000_000})
    assert S.check_attestation_output(token + "\n", 1_900_000_000) == (token, 2_000_000_000.0)


@pytest.mark.parametrize(("output", "code"), [
    ("", "empty_output"),
    ("   \n", "empty_output"),
    ("Failed to attest the guest: attestation failed: HTTP 400: bad evidence", "not_a_token"),
    ("Error: AK cert provisioning is pending. Please try attestation after some time.", "not_a_token"),
    ("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9 trailing words", "not_a_token"),
    ("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9", "malformed_token"),
    ("eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "malformed_token"),
    ("eyJhbGciOiJSUzI1NiJ9.WzFd.c2ln", "malformed_token"),
    ("eyJ0eXAiOiJKV1QifQ.eyJleHAiOjJ9.c2ln", "malformed_token"),  # header without alg
    ("eyJhbGciOiJSUzI1NiJ9.e30.c2ln", "malformed_token"),  # no exp
    ("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOiJzb29uIn0.c2ln", "malformed_token"),  # exp not a number
    ("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOnRydWV9.c2ln", "malformed_token"),  # exp is a boolean
    ("eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjEwMH0.c2ln", "token_expired"),
])
def test_attestation_output_rejections(output, code):
    with pytest.raises(S.SkrError) as err:
        S.check_attestation_output(output, 1_900_000_000)
    assert (err.value.outcome, err.value.error_code) == ("attestation_failed", code)
    assert not err.value.retryable


def test_sanitize_redacts_tokens_but_keeps_diagnostics():
    token = jwt({"exp": 1, "secret": "x" * 40})
    text = ("Target environment attestation does not meet key release policy requirements. Unmet claim "
            "conditions: x-ms-isolation-tee.x-ms-compliance-status equals azure-compliant-cvm. Caller: "
            "oid=0b6e2f0d-8a55-4d3b-9d4e-4a3c2f1e0d9c token " + token + " raw aGVsbG8gd29ybGQgdGhpcyBpcyBhIHNlY3JldCBrZXk9")
    clean = S.sanitize(text, 1000)
    assert token not in clean and "eyJ" not in clean
    assert "aGVsbG8gd29ybGQgdGhpcyBpcyBhIHNlY3JldCBrZXk9" not in clean
    assert "x-ms-isolation-tee.x-ms-compliance-status" in clean
    assert "0b6e2f0d-8a55-4d3b-9d4e-4a3c2f1e0d9c" in clean
    assert len(S.sanitize("a " * 500)) == 300
    assert S.sanitize("line1\r\nline2\x00\x1b[31m") == "line1 line2[31m"


# --------------------------------------------------------------------------- classification
@pytest.mark.parametrize(("text", "code"), [("ForbiddenByRbac", "ForbiddenByRbac"), ("AKV.SKR.1004", "AKV.SKR.1004"),
                                            ("bad code <x>", "bad_code__x_"), ("", "unknown"), ("x" * 80, "x" * 64)])
def test_error_codes_are_short_identifiers(text, code):
    assert S.error_code_of(text) == code
    assert S.classify_release_error(400, kv_body(text, "m")).error_code == (code if text else "HTTP400")



def kv_body(code: str, message: str, inner: str | None = None) -> str:
    error: dict = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return json.dumps({"error": error})


@pytest.mark.parametrize(("status", "body", "outcome", "code", "in_window"), [
    (403, kv_body("Forbidden", "Caller is not authorized to perform action on resource.\r\nIf role assignments "
                  "... Action: 'Microsoft.KeyVault/vaults/keys/release/action'", "ForbiddenByRbac"),
     "forbidden_by_rbac", "ForbiddenByRbac", True),
    (404, kv_body("KeyNotFound", "A key with (name/id) cvm-a was not found in this key vault"),
     "key_not_found", "KeyNotFound", False),
    (400, kv_body("BadParameter", "The key is not exportable: release requires a key created with exportable=true "
                  "and a release policy."), "not_exportable", "BadParameter", False),
    (403, kv_body("Forbidden", "The key is not exportable."), "not_exportable", "Forbidden", False),
    (403, kv_body("Forbidden", "Target environment attestation does not meet key release policy requirements. "
                  "Unmet claim conditions: x-ms-isolation-tee.x-ms-compliance-status", "AccessDenied"),
     "policy_denied", "AccessDenied", False),
    (403, kv_body("Forbidden", "Target environment attestation statement cannot be verified. The token issuer "
                  "'https://x' is not an authority of the key release policy.", "AccessDenied"),
     "attestation_failed", "AccessDenied", False),
    (403, kv_body("Forbidden", "Target environment attestation statement cannot be verified.", "AccessDenied"),
     "attestation_failed", "AccessDenied", False),
    (403, kv_body("Forbidden", "Operation release is not allowed on a disabled key.", "KeyDisabled"),
     "http_error", "KeyDisabled", False),
    (401, kv_body("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."),
     "http_error", "Unauthorized", False),
    (429, kv_body("Throttled", "Request was not processed because too many requests were received."),
     "http_error", "Throttled", True),
    (503, "<html>Service Unavailable</html>", "http_error", "HTTP503", True),
    (500, "", "http_error", "HTTP500", True),
    (302, "", "http_error", "HTTP302", False),
])
def test_classify_release_error(status, body, outcome, code, in_window):
    failure = S.classify_release_error(status, body, 7.0)
    assert (failure.outcome, failure.error_code, failure.http_status) == (outcome, code, status)
    assert failure.retry_in_window is in_window
    assert failure.retryable is in_window


@pytest.mark.parametrize(("exit_code", "output", "outcome", "code", "retryable"), [
    (2, "Attestation failed: HTTP 400", "attestation_failed", "maa_failed", False),
    (3, "Failed to get an access token from IMDS", "imds_failed", "token_failed", True),
    (4, "SKR HTTP request failed: HTTP 403: " + kv_body("Forbidden", "denied", "ForbiddenByRbac"),
     "forbidden_by_rbac", "ForbiddenByRbac", True),
    (4, "SKR HTTP request failed: HTTP 404: " + kv_body("KeyNotFound", "A key with (name/id) k was not found"),
     "key_not_found", "KeyNotFound", False),
    (4, "something else entirely", "http_error", "unparsed_http_error", False),
    (5, "Released key type oct-HSM is not supported", "internal_error", "crypto_error", False),
    (6, "SKR request failed: transport error", "http_error", "transport_error", True),
    (1, "usage", "internal_error", "tool_exit_1", False),
    (-9, "", "internal_error", "tool_exit_-9", False),
])
def test_classify_tool_exit(exit_code, output, outcome, code, retryable):
    failure = S.classify_tool_exit(exit_code, output)
    assert (failure.outcome, failure.error_code, failure.retryable) == (outcome, code, retryable)


# --------------------------------------------------------------------------------- retries
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(S.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(S.time, "sleep", fake.sleep)
    return fake


def test_retry_schedule_ends_with_an_attempt_at_the_window_end(clock):
    calls = []

    def attempt():
        calls.append(clock.now)
        raise S.SkrError("forbidden_by_rbac", "ForbiddenByRbac", retry_in_window=True)

    with pytest.raises(S.SkrError):
        S.retry_in_window(S.load_params({**BASE, "SKR_RETRY_WINDOW_SECONDS": "45"}), attempt)
    assert clock.sleeps == [2, 4, 8, 10, 10, 10, 1]
    assert calls[-1] == 1045.0 and len(calls) == 8


def test_retry_stops_on_success_and_on_terminal_failures(clock):
    results = iter([S.SkrError("http_error", "HTTP503", retry_in_window=True, retry_after=30.0), "ok"])

    def attempt():
        item = next(results)
        if isinstance(item, Exception):
            raise item
        return item

    assert S.retry_in_window(S.load_params(BASE), attempt) == "ok"
    assert clock.sleeps == [30.0]  # Retry-After replaces the backoff step

    def terminal():
        raise S.SkrError("key_not_found", "KeyNotFound")

    with pytest.raises(S.SkrError):
        S.retry_in_window(S.load_params(BASE), terminal)
    assert clock.sleeps == [30.0]


def test_zero_window_means_one_attempt(clock):
    calls = []

    def attempt():
        calls.append(1)
        raise S.SkrError("forbidden_by_rbac", "ForbiddenByRbac", retry_in_window=True)

    with pytest.raises(S.SkrError):
        S.retry_in_window(S.load_params({**BASE, "SKR_RETRY_WINDOW_SECONDS": "0"}), attempt)
    assert calls == [1] and clock.sleeps == []


# ---------------------------------------------------------------------------- result, store
def test_result_line_is_bounded():
    fields = {"schema": 1, "outcome": "http_error", "message": "m" * 5000, "key_id": "k" * 300}
    line = S.result_line(dict(fields))
    assert len(line.encode()) <= S.MAX_RESULT_BYTES
    assert line.startswith("SKR-RESULT {") and json.loads(line[len("SKR-RESULT "):])["message"].endswith("...")
    short = S.result_line({"schema": 1, "message": None})
    assert short == 'SKR-RESULT {"schema":1,"message":null}'


def test_store_is_private_and_atomic(tmp_path):
    target = tmp_path / "keys" / "cvm-a.jws"
    S.prepare_output_dir(str(target))
    assert stat.S_IMODE(os.stat(target.parent).st_mode) == 0o700
    path, digest = S.store_jws(str(target), "a.b.c")
    assert path == str(target) and target.read_text() == "a.b.c"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    S.store_jws(str(target), "d.e.f")  # replaces a previous release
    assert target.read_text() == "d.e.f"
    assert sorted(p.name for p in target.parent.iterdir()) == ["cvm-a.jws"]
    assert digest == __import__("hashlib").sha256(b"a.b.c").hexdigest()


def test_store_refuses_a_shared_directory(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(S.SkrError) as err:
        S.prepare_output_dir(str(shared / "k.jws"))
    assert (err.value.outcome, err.value.error_code) == ("invalid_parameters", "output_dir_not_private")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(S.SkrError) as err:
        S.prepare_output_dir(str(blocker / "sub" / "k.jws"))
    assert err.value.error_code == "output_dir_unusable"


def test_main_never_prints_a_traceback(monkeypatch, capsys):
    def boom(p, counter):
        raise RuntimeError("secret-ish detail eyJhbGciOi")

    monkeypatch.setattr(S, "release_azureattestskr", boom)
    code = S.main({**BASE, "SKR_MODE": "azureattestskr"})
    out, err = capsys.readouterr()
    result = json.loads(out.removeprefix("SKR-RESULT "))
    assert code == 3 and result["outcome"] == "internal_error" and result["error_code"] == "unexpected_RuntimeError"
    assert "secret-ish" not in out + err and "Traceback" not in out + err
    assert out.count("\n") == 1
    assert time.time() > 0
