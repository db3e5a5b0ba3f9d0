"""Error classification, table-driven over the codes of reference/azure_rest.md §1.4 and §3.5.

The exceptions come from the real SDK clients (azure-mgmt-authorization, azure-mgmt-compute,
azure-keyvault-keys) whose requests transport is served by canned responses: the status, headers and
body are Azure's, the exception types and parsing are the SDK's own.
"""

from __future__ import annotations

import http
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import CredentialUnavailableError
from azure.keyvault.keys import KeyClient, KeyReleasePolicy
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.compute import ComputeManagementClient
from requests.structures import CaseInsensitiveDict

from skr.errors import (
    FAILURE_MARKER,
    MAX_RETRY_AFTER_SECONDS,
    MESSAGE_MAX_LENGTH,
    ClassifiedError,
    Operation,
    SkrError,
    classify,
    classify_response,
    decide,
    retry_after_seconds,
    scrub,
)
from skr.models import FailureCode

SUB = "6f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
PRINCIPAL = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
ROLE = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/08bbd89e-9f13-488c-ac41-acfcb10c90ab"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
FAKE_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL21hYSJ9.c2lnbmF0dXJl"

Reply = tuple[int, Any, dict[str, str]]


class _Credential:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if self.error:
            raise self.error
        return AccessToken("not-a-real-token", int(datetime.now(UTC).timestamp()) + 3600)


@dataclass
class _Canned(requests.adapters.BaseAdapter):
    """A requests adapter answering every request with one canned reply (after Key Vault's challenge)."""

    reply: Reply | Exception
    seen: list[requests.PreparedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.seen.append(request)
        if isinstance(self.reply, Exception):
            raise self.reply
        if ".vault.azure.net" in (request.url or "") and "Authorization" not in request.headers:
            challenge = (
                f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="https://vault.azure.net"'
            )
            return self._response(
                request,
                (401, {"error": {"code": "Unauthorized", "message": "AKV10000"}}, {"WWW-Authenticate": challenge}),
            )
        return self._response(request, self.reply)

    @staticmethod
    def _response(request: requests.PreparedRequest, reply: Reply) -> requests.Response:
        status, body, headers = reply
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        all_headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Length": str(len(content)),
            **headers,
        }
        response = requests.Response()
        response.status_code = status
        response.reason = http.HTTPStatus(status).phrase
        response.raw = urllib3.HTTPResponse(
            body=io.BytesIO(content), headers=all_headers, status=status, preload_content=False
        )
        response._content = content
        response._content_consumed = True
        response.headers = CaseInsensitiveDict(all_headers)
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


def _transport(reply: Reply | Exception) -> RequestsTransport:
    session = requests.Session()
    session.mount("https://", _Canned(reply))
    return RequestsTransport(session=session, session_owner=False)


def _arm_error(code: str, message: str = "details") -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _kv_error(code: str, message: str, inner: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return {"error": error}


def _auth(reply: Reply | Exception, credential: Any = None) -> AuthorizationManagementClient:
    return AuthorizationManagementClient(credential or _Credential(), SUB, transport=_transport(reply), retry_total=0)


def _compute(reply: Reply | Exception) -> ComputeManagementClient:
    return ComputeManagementClient(_Credential(), SUB, transport=_transport(reply), retry_total=0)


def _keys(reply: Reply | Exception) -> KeyClient:
    vault = f"https://kv-{uuid.uuid4().hex[:12]}.vault.azure.net"  # the challenge cache is per host
    return KeyClient(vault, _Credential(), transport=_transport(reply), retry_total=0)


def assign(reply: Reply | Exception) -> Any:
    scope = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/keys/k"
    body = {"role_definition_id": ROLE, "principal_id": PRINCIPAL, "principal_type": "ServicePrincipal"}
    return _auth(reply).role_assignments.create(scope, str(uuid.uuid4()), body)


def read_assignment(reply: Reply | Exception) -> Any:
    return _auth(reply).role_assignments.get(f"/subscriptions/{SUB}", str(uuid.uuid4()))


def delete_assignment(reply: Reply | Exception) -> Any:
    return _auth(reply).role_assignments.delete(f"/subscriptions/{SUB}", str(uuid.uuid4()))


def read_role(reply: Reply | Exception) -> Any:
    return _auth(reply).role_definitions.get(f"/subscriptions/{SUB}", str(uuid.uuid4()))


def create_role(reply: Reply | Exception) -> Any:
    body = {"role_name": "SKR Key Release User", "permissions": [], "assignable_scopes": [f"/subscriptions/{SUB}"]}
    return _auth(reply).role_definitions.create_or_update(f"/subscriptions/{SUB}", str(uuid.uuid4()), body)


def read_vm(reply: Reply | Exception) -> Any:
    return _compute(reply).virtual_machines.get("rg", "cvm-01")


def put_run_command(reply: Reply | Exception) -> Any:
    body = {"location": "westeurope", "properties": {"source": {"script": "echo"}}}
    return _compute(reply).virtual_machine_run_commands.begin_create_or_update("rg", "cvm-01", "skr-release-001", body)


def get_key(reply: Reply | Exception) -> Any:
    return _keys(reply).get_key("cvm-01")


def create_key(reply: Reply | Exception) -> Any:
    policy = KeyReleasePolicy(b'{"version":"1.0.0","anyOf":[]}')
    return _keys(reply).create_rsa_key("cvm-01", hardware_protected=True, exportable=True, release_policy=policy)


def release_key(reply: Reply | Exception) -> Any:
    return _keys(reply).release_key("cvm-01", FAKE_JWT)


FORBIDDEN_BY_RBAC = (
    "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role "
    "definitions were changed recently, please observe propagation time.\r\nCaller: appid=a;oid=b;iss=c\r\n"
    "Action: 'Microsoft.KeyVault/vaults/keys/release/action'\r\nResource: 'kv/keys/cvm-01'\r\n"
    "Assignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: kv;location=westeurope"
)
PRINCIPAL_NOT_FOUND = (
    f"Principal {PRINCIPAL.replace('-', '')} does not exist in the directory {TENANT}. Check that you have the correct "
    "principal ID. If you are creating this principal and then immediately assigning a role, this error might be "
    "related to a replication delay."
)


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Reply | Exception], Any]
    operation: Operation
    reply: Reply
    code: FailureCode
    retryable: bool
    exception: type[Exception] = HttpResponseError
    retry_after: float | None = None


CASES = [
    # --- ARM Authorization (§1.4) ---
    Case("assignment exists", assign, Operation.ROLE_ASSIGNMENT_WRITE,
         (409, _arm_error("RoleAssignmentExists", "The role assignment already exists."), {}),
         FailureCode.CONFLICT, False, ResourceExistsError),
    Case("principal not replicated", assign, Operation.ROLE_ASSIGNMENT_WRITE,
         (400, _arm_error("PrincipalNotFound", PRINCIPAL_NOT_FOUND), {}), FailureCode.PRINCIPAL_NOT_FOUND, True),
    Case("our identity lacks roleAssignments/write", assign, Operation.ROLE_ASSIGNMENT_WRITE,
         (403, _arm_error("AuthorizationFailed", "The client 'x' with object id 'y' does not have authorization"), {}),
         FailureCode.NOT_AUTHORIZED, False),
    Case("assignment name reused with other properties", assign, Operation.ROLE_ASSIGNMENT_WRITE,
         (400, _arm_error("RoleAssignmentUpdateNotPermitted"), {}), FailureCode.CONFLICT, False),
    Case("assignment limit", assign, Operation.ROLE_ASSIGNMENT_WRITE,
         (400, _arm_error("RoleAssignmentLimitExceeded", "No more role assignments can be created"), {}),
         FailureCode.QUOTA_EXCEEDED, False),
    Case("authorization throttled", assign, Operation.ROLE_ASSIGNMENT_WRITE,
         (429, _arm_error("ResourceRequestsThrottled", "Please try again after '5' seconds."), {"Retry-After": "5"}),
         FailureCode.THROTTLED, True, retry_after=5.0),
    Case("ARM unavailable", assign, Operation.ROLE_ASSIGNMENT_WRITE,
         (503, _arm_error("ServiceUnavailable"), {"Retry-After": "10"}), FailureCode.TRANSIENT, True, retry_after=10.0),
    Case("assignment not visible yet", read_assignment, Operation.ROLE_ASSIGNMENT_READ,
         (404, _arm_error("RoleAssignmentNotFound"), {}), FailureCode.ASSIGNMENT_NOT_FOUND, True, ResourceNotFoundError),
    Case("assignment already gone", delete_assignment, Operation.ROLE_ASSIGNMENT_DELETE,
         (404, _arm_error("RoleAssignmentNotFound"), {}), FailureCode.ASSIGNMENT_NOT_FOUND, False, ResourceNotFoundError),
    Case("role definition missing", read_role, Operation.ROLE_DEFINITION,
         (404, _arm_error("RoleDefinitionDoesNotExist"), {}), FailureCode.ROLE_NOT_FOUND, False, ResourceNotFoundError),
    Case("custom role name taken", create_role, Operation.ROLE_DEFINITION,
         (409, _arm_error("RoleDefinitionWithSameNameExists", "A custom role with the same name already exists"), {}),
         FailureCode.CONFLICT, False, ResourceExistsError),
    Case("role definition limit", create_role, Operation.ROLE_DEFINITION,
         (400, _arm_error("RoleDefinitionLimitExceeded"), {}), FailureCode.QUOTA_EXCEEDED, False),
    # --- ARM Compute ---
    Case("VM missing", read_vm, Operation.VM_READ,
         (404, _arm_error("ResourceNotFound", "The Resource 'Microsoft.Compute/virtualMachines/cvm-01' was not found"), {}),
         FailureCode.VM_NOT_FOUND, False, ResourceNotFoundError),
    Case("VM read throttled (ms header)", read_vm, Operation.VM_READ,
         (429, _arm_error("TooManyRequests"), {"x-ms-retry-after-ms": "1500"}), FailureCode.THROTTLED, True, retry_after=1.5),
    Case("compute 500 without a JSON body", read_vm, Operation.VM_READ,
         (500, "<html>oops</html>", {"Content-Type": "text/html"}), FailureCode.TRANSIENT, True),
    Case("compute 502", read_vm, Operation.VM_READ, (502, "", {}), FailureCode.TRANSIENT, True),
    Case("JSON body without an error code", read_vm, Operation.VM_READ,
         (503, {"status": "Failed"}, {}), FailureCode.TRANSIENT, True),
    Case("run command already running", put_run_command, Operation.RUN_COMMAND,
         (409, _arm_error("Conflict", "Run command extension execution is in progress."), {}),
         FailureCode.RUN_COMMAND_CONFLICT, True, ResourceExistsError),
    Case("run command not allowed (400)", put_run_command, Operation.RUN_COMMAND,
         (400, _arm_error("OperationNotAllowed", "x"), {}), FailureCode.INVALID_REQUEST, False),
    Case("VM deleted under the run command", put_run_command, Operation.RUN_COMMAND,
         (404, _arm_error("ParentResourceNotFound"), {}), FailureCode.VM_DELETED, False, ResourceNotFoundError),
    Case("busy VM (RetryableError)", read_vm, Operation.VM_READ,
         (409, _arm_error("RetryableError", "retry"), {}), FailureCode.TRANSIENT, True, ResourceExistsError),
    # --- Key Vault (§3.5) ---
    Case("release during RBAC propagation", release_key, Operation.KEY_RELEASE,
         (403, _kv_error("Forbidden", FORBIDDEN_BY_RBAC, "ForbiddenByRbac"), {}), FailureCode.FORBIDDEN_BY_RBAC, True),
    Case("our identity lacks key create", create_key, Operation.KEY_WRITE,
         (403, _kv_error("Forbidden", FORBIDDEN_BY_RBAC, "ForbiddenByRbac"), {}), FailureCode.NOT_AUTHORIZED, False),
    Case("access-policy vault without release", release_key, Operation.KEY_RELEASE,
         (403, _kv_error("Forbidden", "The user, group or application 'x' does not have keys release permission", "AccessDenied"), {}),
         FailureCode.NOT_AUTHORIZED, False),
    Case("token not verifiable", release_key, Operation.KEY_RELEASE,
         (403, _kv_error("Forbidden", "Target environment attestation statement cannot be verified.", "AccessDenied"), {}),
         FailureCode.ATTESTATION_FAILED, False),
    Case("claims do not meet the policy", release_key, Operation.KEY_RELEASE,
         (403, _kv_error("Forbidden", "Target environment attestation does not meet key release policy requirements"), {}),
         FailureCode.POLICY_DENIED, False),
    Case("key missing", get_key, Operation.KEY_READ,
         (404, _kv_error("KeyNotFound", "A key with (name/id) cvm-01 was not found in this key vault"), {}),
         FailureCode.KEY_NOT_FOUND, False, ResourceNotFoundError),
    Case("key soft-deleted", create_key, Operation.KEY_WRITE,
         (409, _kv_error("Conflict", "Key cvm-01 is currently in a deleted but recoverable state", "ObjectIsDeletedButRecoverable"), {}),
         FailureCode.KEY_DELETED, False, ResourceExistsError),
    Case("key being deleted", create_key, Operation.KEY_WRITE,
         (409, _kv_error("Conflict", "Key cvm-01 is currently being deleted.", "ObjectIsBeingDeleted"), {}),
         FailureCode.KEY_DELETED, False, ResourceExistsError),
    Case("exportable without policy", create_key, Operation.KEY_WRITE,
         (400, _kv_error("BadParameter", "AKV.SKR.1004: Exportable keys must have release policy."), {}),
         FailureCode.NOT_EXPORTABLE, False),
    Case("policy on non-exportable key", create_key, Operation.KEY_WRITE,
         (400, _kv_error("BadParameter", "AKV.SKR.1005: Non-exportable keys must not have release policy."), {}),
         FailureCode.NOT_EXPORTABLE, False),
    Case("standard vault / old api", create_key, Operation.KEY_WRITE,
         (400, _kv_error("BadParameter", "AKV.SKR.1001: exportable is only supported on premium vaults"), {}),
         FailureCode.NOT_EXPORTABLE, False),
    Case("HSM key on standard vault", create_key, Operation.KEY_WRITE,
         (403, _kv_error("Forbidden", "Hardware key operation not allowed on standard vault"), {}),
         FailureCode.NOT_EXPORTABLE, False),
    Case("immutable policy", create_key, Operation.KEY_WRITE,
         (400, _kv_error("BadParameter", "AKV.SKR.1020: Immutable Key Release Policy cannot be modified."), {}),
         FailureCode.KEY_POLICY_MISMATCH, False),
    Case("other bad parameter", create_key, Operation.KEY_WRITE,
         (400, _kv_error("BadParameter", "The key size is invalid"), {}), FailureCode.INVALID_REQUEST, False),
    Case("vault throttled", get_key, Operation.KEY_READ,
         (429, _kv_error("Throttled", "Request was not processed because too many requests were received."), {"Retry-After": "2"}),
         FailureCode.THROTTLED, True, retry_after=2.0),
    Case("token rejected after the challenge", get_key, Operation.KEY_READ,
         (401, _kv_error("Unauthorized", "AKV10032: Invalid issuer."), {}), FailureCode.NOT_AUTHORIZED, False, ClientAuthenticationError),
    Case("unexpected 4xx", get_key, Operation.KEY_READ,
         (418, _kv_error("Teapot", "short and stout"), {}), FailureCode.HTTP_ERROR, False),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_sdk_failures_classify(case: Case) -> None:
    with pytest.raises(case.exception) as info:
        case.call(case.reply)
    error = classify(info.value, case.operation)
    assert (error.code, error.retryable) == (case.code, case.retryable)
    assert error.status == case.reply[0]
    assert error.retry_after_seconds == case.retry_after
    assert error.operation is case.operation
    body = case.reply[1]
    if isinstance(body, dict) and "error" in body:
        assert error.azure_code == body["error"]["code"]
        assert error.inner_code == body["error"].get("innererror", {}).get("code")
    else:
        assert error.azure_code is None and error.inner_code is None
    assert "\r" not in error.message and "\n" not in error.message
    assert FAKE_JWT not in error.message
    assert ClassifiedError.from_json(json.loads(json.dumps(error.to_json()))) == error


def test_connection_failure_is_transient() -> None:
    with pytest.raises(ServiceRequestError) as info:
        read_vm(requests.exceptions.ConnectionError("connection refused"))
    error = classify(info.value, Operation.VM_READ)
    assert (error.code, error.retryable, error.status) == (FailureCode.TRANSIENT, True, None)
    assert error.message.startswith("ServiceRequestError:")


def test_credential_failure_is_not_authorized_and_terminal() -> None:
    client = _auth(
        (200, {}, {}), credential=_Credential(CredentialUnavailableError("ManagedIdentityCredential unavailable"))
    )
    with pytest.raises(ClientAuthenticationError) as info:
        client.role_assignments.get(f"/subscriptions/{SUB}", str(uuid.uuid4()))
    error = classify(info.value)
    assert (error.code, error.retryable) == (FailureCode.NOT_AUTHORIZED, False)
    assert "ManagedIdentityCredential unavailable" in error.message


@pytest.mark.parametrize(
    ("exc", "code", "retryable"),
    [
        (TimeoutError("read timed out"), FailureCode.TRANSIENT, True),
        (ConnectionResetError("reset"), FailureCode.TRANSIENT, True),
        (ValueError("bad input"), FailureCode.INTERNAL_ERROR, False),
        (KeyError("x"), FailureCode.INTERNAL_ERROR, False),
        (HttpResponseError("no response at all"), FailureCode.HTTP_ERROR, False),
    ],
)
def test_non_http_exceptions(exc: Exception, code: FailureCode, retryable: bool) -> None:
    error = classify(exc)
    assert (error.code, error.retryable) == (code, retryable)
    assert error.message.startswith(type(exc).__name__)


def test_skr_error_round_trips_through_a_durable_failure_text() -> None:
    raised = SkrError.of(FailureCode.RUN_COMMAND_FAILED, "script exited 3", operation=Operation.RUN_COMMAND)
    assert classify(raised) is raised.error
    durable_text = f"Activity function 'run_release' failed: {raised} \n Traceback (most recent call last): ..."
    recovered = ClassifiedError.from_failure(Exception(durable_text))
    assert recovered == raised.error
    assert recovered is not None and recovered.code is FailureCode.RUN_COMMAND_FAILED
    assert str(raised).startswith(FAILURE_MARKER)


@pytest.mark.parametrize(
    "text", ["plain failure", f"{FAILURE_MARKER}{{not json", f'{FAILURE_MARKER}{{"code":"bogus"}}']
)
def test_from_failure_without_a_classification(text: str) -> None:
    assert ClassifiedError.from_failure(text) is None


def test_describe() -> None:
    error = classify_response(429, "TooManyRequests", None, "slow down", headers={"Retry-After": "7"})
    assert error.describe() == "throttled (429 TooManyRequests) [retryable, retry after 7s]: slow down"
    inner = classify_response(403, "Forbidden", "ForbiddenByRbac", "no", operation=Operation.KEY_RELEASE)
    assert inner.describe() == "forbidden_by_rbac (403 Forbidden/ForbiddenByRbac) [retryable]: no"
    plain = SkrError.of(FailureCode.VM_NOT_READY, "agent not ready").error
    assert plain.describe() == "vm_not_ready [terminal]: agent not ready"


def test_terminal_errors_ignore_retry_after() -> None:
    error = classify_response(400, "BadParameter", headers={"Retry-After": "30"})
    assert error.retry_after_seconds is None and not error.retryable


@pytest.mark.parametrize(
    ("status", "code", "inner", "operation", "expected"),
    [
        (None, None, None, Operation.OTHER, (FailureCode.HTTP_ERROR, False)),
        (404, None, None, Operation.EVENT_PUBLISH, (FailureCode.HTTP_ERROR, False)),
        (404, "NotFound", None, Operation.KEY_RELEASE, (FailureCode.KEY_NOT_FOUND, False)),
        (408, None, None, Operation.OTHER, (FailureCode.TRANSIENT, True)),
        (409, "Conflict", None, Operation.OTHER, (FailureCode.CONFLICT, False)),
        (409, "AnotherOperationInProgress", None, Operation.RUN_COMMAND, (FailureCode.RUN_COMMAND_CONFLICT, True)),
        (409, "AnotherOperationInProgress", None, Operation.VM_READ, (FailureCode.TRANSIENT, True)),
        (401, "InvalidAuthenticationToken", None, Operation.VM_READ, (FailureCode.NOT_AUTHORIZED, False)),
        (400, "Whatever", "ObjectIsDeletedButRecoverable", Operation.KEY_WRITE, (FailureCode.KEY_DELETED, False)),
    ],
)
def test_decide_edges(
    status: int | None, code: str | None, inner: str | None, operation: Operation, expected: tuple[FailureCode, bool]
) -> None:
    assert decide(status, code, inner, "", operation) == expected


# --- Retry-After ---------------------------------------------------------------------------------

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "5"}, 5.0),
        ({"retry-after": " 2.5 "}, 2.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "999999"}, MAX_RETRY_AFTER_SECONDS),
        ({"Retry-After": format_datetime(NOW + timedelta(seconds=42), usegmt=True)}, 42.0),
        ({"Retry-After": format_datetime(NOW - timedelta(seconds=42), usegmt=True)}, 0.0),
        ({"Retry-After": "Wed, 01 Jan 2025 12:00:10"}, 10.0),  # no zone: read as UTC
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({"x-ms-retry-after-ms": "1200"}, 1.2),
        ({"x-ms-retry-after-ms": "junk", "Retry-After": "3"}, 3.0),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == expected


# --- scrubbing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"target={FAKE_JWT} rejected", FAKE_JWT),
        ("Authorization: Bearer abcdefghijklmnop.qrstuv", "abcdefghijklmnop"),
        ('{"access_token": "s3cr3t-value", "expires_in": "3599"}', "s3cr3t-value"),
        ("https://acct.blob.core.windows.net/c/b?sv=2022&sig=AbCdEf%2B123", "AbCdEf"),
        ("client_secret=hunter2hunter2", "hunter2"),
    ],
)
def test_scrub_removes_secrets(text: str, secret: str) -> None:
    cleaned = scrub(text)
    assert secret not in cleaned and "redacted" in cleaned


def test_scrub_keeps_ordinary_text_and_caps_length() -> None:
    assert scrub("Key cvm-01 was not found\r\n in vault kv") == "Key cvm-01 was not found in vault kv"
    long = scrub("x" * 5000)
    assert len(long) == MESSAGE_MAX_LENGTH and long.endswith("…")


def test_a_token_in_an_azure_message_never_reaches_the_classification() -> None:
    with pytest.raises(HttpResponseError) as info:
        release_key((403, _kv_error("Forbidden", f"Token {FAKE_JWT} has expired", "AccessDenied"), {}))
    error = classify(info.value, Operation.KEY_RELEASE)
    assert FAKE_JWT not in json.dumps(error.to_json())
