"""What every ARM and Key Vault request passes first: authentication, throttling, counting, RBAC."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.requests import Request

from localdev.twin.http import TwinHttpError, arm_error_response, kv_error_response
from localdev.twin.identity import TokenError
from localdev.twin.model import Principal, Vault

if TYPE_CHECKING:
    from localdev.twin.core import Twin

ARM_AUDIENCE = "https://management.azure.com"
VAULT_AUDIENCE = "https://vault.azure.net"

_ARM_TOKEN_CODES = {
    "expired": "ExpiredAuthenticationToken",
    "audience": "InvalidAuthenticationTokenAudience",
    "issuer": "InvalidAuthenticationTokenTenant",
}
_KV_TOKEN_CODES = {
    "expired": "AKV10013",
    "audience": "AKV10022",
    "issuer": "AKV10032",
}


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _kind_of(method: str) -> str:
    if method in ("GET", "HEAD"):
        return "reads"
    if method == "DELETE":
        return "deletes"
    return "writes"


def authenticate_arm(twin: Twin, request: Request) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise TwinHttpError(arm_error_response(
            401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.",
            headers={"WWW-Authenticate": 'Bearer authorization_uri="https://login.windows.net/", '
                     'error="invalid_token", error_description="The authentication failed because of '
                     "missing 'Authorization' header.\""}))
    try:
        return twin.identity.verify(token, ARM_AUDIENCE)
    except TokenError as exc:
        code = _ARM_TOKEN_CODES.get(exc.kind, "InvalidAuthenticationToken")
        raise TwinHttpError(arm_error_response(
            401, code, f"The access token is invalid. {exc.message}",
            headers={"WWW-Authenticate": 'Bearer authorization_uri="https://login.windows.net/", '
                     f'error="invalid_token", error_description="{exc.message}"'})) from exc


def _counted(twin: Twin, request: Request, service: str, operation: str,
             authenticate: Callable[[Twin, Request], Principal]) -> Principal:
    """Authenticate and count the call under its caller (``anonymous`` when refused)."""
    try:
        caller = authenticate(twin, request)
    except TwinHttpError:
        twin.counters.record("anonymous", service, operation)
        raise
    twin.counters.record(caller.object_id, service, operation)
    return caller


def arm_call(twin: Twin, request: Request, action: str, scope: str, *, kind: str | None = None,
             authorize: bool = True) -> Principal:
    caller = _counted(twin, request, "arm", action, authenticate_arm)
    bucket = kind or _kind_of(request.method)
    outcome = twin.throttle.take(caller.object_id, bucket)
    header = f"x-ms-ratelimit-remaining-subscription-{bucket}"
    if not outcome.allowed:
        raise TwinHttpError(arm_error_response(
            429, "SubscriptionRequestsThrottled",
            f"Number of '{bucket[:-1]}' requests for subscription '{twin.config.subscription_id}' actor "
            f"'{caller.object_id}' exceeded. Please try again after '{outcome.retry_after}' seconds after the "
            "last request. See https://aka.ms/ARMThrottling for more details.",
            headers={"Retry-After": str(outcome.retry_after), header: "0"}))
    if outcome.remaining is not None:
        request.scope["twin.response_headers"] = {header: str(outcome.remaining)}
    if authorize:
        decision = twin.rbac.check(caller.object_id, action, scope, data_action=False)
        request.scope["twin.decision"] = decision
        if not decision.allowed:
            raise TwinHttpError(arm_error_response(
                403, "AuthorizationFailed",
                f"The client '{caller.display_name}' with object id '{caller.object_id}' does not have "
                f"authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. "
                "If access was recently granted, please refresh your credentials."))
    return caller


def _challenge_headers(twin: Twin) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{twin.config.tenant_id}", '
                                f'resource="{VAULT_AUDIENCE}"'}


def authenticate_kv(twin: Twin, request: Request) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise TwinHttpError(kv_error_response(401, "Unauthorized",
                                              "AKV10000: Request is missing a Bearer or PoP token.",
                                              headers=_challenge_headers(twin)))
    try:
        return twin.identity.verify(token, VAULT_AUDIENCE)
    except TokenError as exc:
        code = _KV_TOKEN_CODES.get(exc.kind, "AKV10000")
        raise TwinHttpError(kv_error_response(401, "Unauthorized", f"{code}: {exc.message}",
                                              headers=_challenge_headers(twin))) from exc


def kv_call(twin: Twin, request: Request, data_action: str, scope: str, vault: Vault) -> Principal:
    caller = _counted(twin, request, "keyvault", data_action, authenticate_kv)
    decision = twin.rbac.check(caller.object_id, data_action, scope, data_action=True)
    request.scope["twin.decision"] = decision
    if not decision.allowed:
        raise TwinHttpError(kv_error_response(
            403, "Forbidden",
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or "
            "role definitions were changed recently, please observe propagation time.\r\n"
            f"Caller: appid={caller.app_id};oid={caller.object_id};iss={twin.identity.issuer}\r\n"
            f"Action: '{data_action}'\r\nResource: '{scope.lower()}'\r\nAssignment: (not found)\r\n"
            "DenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\n"
            f"Vault: {vault.name};location={vault.location}\r\n",
            "ForbiddenByRbac"))
    return caller

