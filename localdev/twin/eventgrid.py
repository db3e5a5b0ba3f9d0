"""The twin's Event Grid topic endpoint (for ``EventGridPublisherClient``): authenticates and records.

Auth as the real service: ``aeg-sas-key`` (the topic key), ``aeg-sas-token`` (HMAC-SHA256 SAS) or
an Entra bearer token for ``https://eventgrid.azure.net`` whose principal holds the data action
``Microsoft.EventGrid/events/send/action`` on the topic.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from localdev.twin.gate import bearer_token
from localdev.twin.identity import TokenError

if TYPE_CHECKING:
    from localdev.twin.core import Twin

SEND_ACTION = "Microsoft.EventGrid/events/send/action"
MAX_BODY = 1024 * 1024
_CLOUD_REQUIRED = ("id", "source", "specversion", "type")
_EG_REQUIRED = ("id", "subject", "eventType", "eventTime", "dataVersion", "data")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class TopicApi:
    def __init__(self, twin: Twin) -> None:
        self.twin = twin

    def _sas_ok(self, token: str) -> bool:
        fields = parse_qs(token, keep_blank_values=True)
        try:
            resource, expiry, signature = fields["r"][0], fields["e"][0], fields["s"][0]
        except (KeyError, IndexError):
            return False
        unsigned = token.rsplit("&s=", 1)[0]
        expected = base64.b64encode(hmac.new(base64.b64decode(self.twin.events.topic_key), unsigned.encode("ascii"),
                                             hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, unquote(signature)):
            return False
        try:
            expires = dt.datetime.fromisoformat(unquote(expiry))
        except ValueError:
            return False
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        return bool(resource) and expires.timestamp() > self.twin.clock.time()

    def _caller(self, request: Request) -> tuple[str | None, Response | None]:
        twin = self.twin
        key = request.headers.get("aeg-sas-key")
        if key is not None:
            if hmac.compare_digest(key, twin.events.topic_key):
                return "sas-key", None
            return None, _error(401, "Unauthorized", "The request authorization key is not authorized for the topic.")
        sas = request.headers.get("aeg-sas-token")
        if sas is not None:
            if self._sas_ok(sas):
                return "sas-token", None
            return None, _error(401, "Unauthorized", "The SAS token is invalid or expired.")
        token = bearer_token(request)
        if token is None:
            return None, _error(401, "Unauthorized", "The request authorization header is missing: use aeg-sas-key, "
                                "aeg-sas-token or a bearer token.")
        try:
            principal = twin.identity.verify(token, "https://eventgrid.azure.net")
        except TokenError as exc:
            return None, _error(401, "Unauthorized", f"The bearer token is not valid: {exc.message}")
        decision = twin.rbac.check(principal.object_id, SEND_ACTION, twin.topic_resource_id, data_action=True)
        if not decision.allowed:
            return principal.object_id, _error(
                403, "Forbidden", f"The principal '{principal.object_id}' does not have the required permission "
                f"'{SEND_ACTION}' on '{twin.topic_resource_id}'.")
        return principal.object_id, None

    async def publish(self, request: Request) -> Response:
        twin = self.twin
        caller, refusal = self._caller(request)
        twin.counters.record(caller or "anonymous", "eventgrid", SEND_ACTION)
        if refusal is not None:
            return refusal
        if request.query_params.get("api-version") is None:
            return _error(400, "BadRequest", "The api-version query parameter is required.")
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _error(413, "RequestEntityTooLarge", f"The request of {len(raw)} bytes exceeds the 1 MB limit.")
        try:
            events = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _error(400, "BadRequest", "The request body is not valid JSON.")
        if not isinstance(events, list) or not events or not all(isinstance(e, dict) for e in events):
            return _error(400, "BadRequest", "The request body must be a non-empty JSON array of events.")
        cloud = "cloudevents" in request.headers.get("content-type", "")
        required = _CLOUD_REQUIRED if cloud else _EG_REQUIRED
        for index, event in enumerate(events):
            missing = [name for name in required if name not in event]
            if missing:
                return _error(400, "BadRequest", f"Event {index} is missing required properties: {', '.join(missing)}.")
            if cloud and event.get("specversion") != "1.0":
                return _error(400, "BadRequest", f"Event {index}: specversion must be '1.0'.")
        now = twin.clock.time()
        records: list[dict[str, Any]] = [{"schema": "cloudevents" if cloud else "eventgrid", "event": event,
                                          "publisher": caller, "received_at": now} for event in events]
        with twin.lock:
            twin.events.published.extend(records)
        return Response(status_code=200)

    def routes(self) -> list[BaseRoute]:
        return [Route("/api/events", self.publish, methods=["POST"])]


def routes(twin: Twin) -> list[BaseRoute]:
    return TopicApi(twin).routes()
