"""The twin's "Entra ID": signs access tokens naming principals and verifies them on every call.

Also serves the App Service managed-identity endpoint (``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``)
that ``ManagedIdentityCredential`` uses, so the app's production credential path runs unchanged.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from localdev.twin.model import Principal

if TYPE_CHECKING:
    from localdev.twin.core import Twin

# Resources whose tokens name the same audience (ARM has two historic identifiers).
_AUDIENCE_ALIASES = {
    "https://management.core.windows.net": "https://management.azure.com",
}
KNOWN_RESOURCES = (
    "https://management.azure.com",
    "https://management.core.windows.net",
    "https://vault.azure.net",
    "https://eventgrid.azure.net",
    "https://attest.azure.net",
    "https://storage.azure.com",
)


def normalize_audience(audience: str) -> str:
    cleaned = audience.strip().removesuffix("/.default").rstrip("/").lower()
    return _AUDIENCE_ALIASES.get(cleaned, cleaned)


@dataclass
class TokenError(Exception):
    """Why a bearer token was refused: ``kind`` is missing|malformed|signature|expired|audience|issuer."""

    kind: str
    message: str

    def __str__(self) -> str:
        return self.message


class Identity:
    def __init__(self, twin: Twin) -> None:
        self._twin = twin
        self._key = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8), "use": "sig"})
        self._retired: dict[str, Principal] = {}
        # Principals whose tokens the managed-identity endpoint hands out (system-assigned first).
        self.app_identities: list[str] = []

    @property
    def issuer(self) -> str:
        return f"https://sts.windows.net/{self._twin.config.tenant_id}/"

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._key.as_dict(private=False)]}

    def claims_for(self, principal: Principal, audience: str) -> dict[str, Any]:
        """The claims of a token for ``principal``; also what Event Grid puts in ``data.claims``."""
        now = int(self._twin.clock.time())
        claims: dict[str, Any] = {
            "aud": audience.removesuffix("/.default"),
            "iss": self.issuer,
            "iat": now,
            "nbf": now - 300,
            "exp": now + int(self._twin.config.token_lifetime_seconds),
            "appid": principal.app_id,
            "appidacr": "2",
            "idp": self.issuer,
            "idtyp": "user" if principal.principal_type == "User" else "app",
            "oid": principal.object_id,
            "sub": principal.object_id,
            "tid": self._twin.config.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
        }
        if principal.principal_type == "User":
            claims["name"] = principal.display_name
        if principal.vm_resource_id:
            claims["xms_mirid"] = principal.vm_resource_id
        return claims

    def mint_token(self, principal_id: str, audience: str) -> str:
        """A signed access token for ``principal_id`` with ``aud`` = ``audience`` (a resource URI)."""
        principal = self._twin.principal(principal_id)
        if principal is None:
            raise KeyError(f"unknown principal {principal_id!r}")
        header = {"alg": "RS256", "kid": self._key.kid, "x5t": self._key.kid}
        return jwt.encode(header, self.claims_for(principal, audience), self._key)

    def verify(self, token: str, audience: str) -> Principal:
        """The principal a token names; raises :class:`TokenError` when Azure would refuse it."""
        try:
            decoded = jwt.decode(token, self._key, algorithms=["RS256"])
        except JoseError as exc:
            raise TokenError("signature", f"The token signature is invalid: {exc.error}.") from exc
        except (ValueError, TypeError) as exc:
            raise TokenError("malformed", "The access token is not a well-formed JWT.") from exc
        claims = decoded.claims
        if claims.get("iss") != self.issuer:
            raise TokenError("issuer", f"Invalid issuer. Expected {self.issuer}.")
        now = self._twin.clock.time()
        if float(claims.get("exp", 0)) <= now:
            raise TokenError("expired", "The access token expiry UTC time is earlier than current UTC time.")
        if float(claims.get("nbf", 0)) > now + 300:
            raise TokenError("expired", "The access token is not yet valid.")
        if normalize_audience(str(claims.get("aud", ""))) != normalize_audience(audience):
            raise TokenError("audience", f"The access token has been obtained for wrong audience or resource "
                                         f"'{claims.get('aud')}'. It should exactly match with one of the "
                                         f"allowed audiences '{audience}'.")
        object_id = str(claims.get("oid", ""))
        principal = self._twin.principal(object_id) or self._retired.get(object_id)
        if principal is None:
            raise TokenError("malformed", f"The token names an unknown principal {object_id}.")
        return principal

    def caller_of(self, token: str | None) -> str:
        """The object id a (validly signed) token names, else "anonymous" (for counting only)."""
        if not token:
            return "anonymous"
        try:
            return str(jwt.decode(token, self._key, algorithms=["RS256"]).claims.get("oid", "anonymous"))
        except (JoseError, ValueError, TypeError):
            return "anonymous"

    def retire(self, principal: Principal) -> None:
        """Keep a deleted principal verifiable: issued tokens stay valid until they expire."""
        self._retired[principal.object_id] = principal

    # ------------------------------------------------------------ managed identity endpoint
    def _select(self, request: Request) -> Principal | None:
        query = request.query_params
        ids = self.app_identities or [self._twin.app_principal.object_id]
        candidates = [p for p in (self._twin.principal(i) for i in ids) if p is not None]
        if "client_id" in query:
            return next((p for p in candidates if p.app_id.lower() == query["client_id"].lower()), None)
        for name in ("object_id", "principal_id"):
            if name in query:
                return next((p for p in candidates if p.object_id == query[name].lower()), None)
        if "mi_res_id" in query:
            return next((p for p in candidates if (p.vm_resource_id or "").lower() == query["mi_res_id"].lower()),
                        None)
        return candidates[0] if candidates else None

    async def token_endpoint(self, request: Request) -> JSONResponse:
        twin = self._twin
        if request.headers.get("x-identity-header") != twin.identity_header:
            twin.counters.record("anonymous", "identity", "token")
            return JSONResponse({"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or invalid."},
                                status_code=401)
        resource = request.query_params.get("resource", "")
        if request.query_params.get("api-version") != "2019-08-01" or not resource:
            return JSONResponse({"statusCode": 400, "message": "api-version=2019-08-01 and resource are required."},
                                status_code=400)
        principal = self._select(request)
        if principal is None:
            return JSONResponse({"statusCode": 400, "message": "No managed identity found for the specified "
                                 "client_id/object_id/mi_res_id."}, status_code=400)
        twin.counters.record(principal.object_id, "identity", "token")
        if normalize_audience(resource) not in {normalize_audience(r) for r in KNOWN_RESOURCES}:
            return JSONResponse({"statusCode": 400, "message": f"AADSTS500011: The resource principal named "
                                 f"{resource} was not found in the tenant."}, status_code=400)
        token = self.mint_token(principal.object_id, resource)
        expires_on = int(twin.clock.time() + twin.config.token_lifetime_seconds)
        return JSONResponse({"access_token": token, "expires_on": str(expires_on), "resource": resource,
                             "token_type": "Bearer", "client_id": principal.app_id})

    def routes(self) -> list[BaseRoute]:
        return [Route("/msi/token", self.token_endpoint, methods=["GET"])]
