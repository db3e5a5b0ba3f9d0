"""Event Grid for the twin: ARM resource events delivered to a webhook, on the twin clock.

Every ARM write/delete the twin serves (VMs, role assignments and definitions, run commands
reported by their module) becomes a real-shaped ``Microsoft.Resources.Resource*Success`` event.
Delivery follows Event Grid: a validation handshake first, at-least-once with retries
(10 s, 30 s, 1 min, 5 min, ...), no ordering guarantee. On demand it drops, duplicates, delays,
reorders or holds events so tests can prove the app copes.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import secrets
import ssl
import threading
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import httpx
from starlette.requests import Request

from localdev.twin.model import Principal
from localdev.twin.rbac import Decision, iso

if TYPE_CHECKING:
    from localdev.clock import TimerHandle
    from localdev.twin.core import Twin

SCHEMAS = ("eventgrid", "cloudevents")
NO_RETRY_STATUSES = frozenset({400, 401, 403, 413})
_CLAIM_URIS = {
    "oid": "http://schemas.microsoft.com/identity/claims/objectidentifier",
    "tid": "http://schemas.microsoft.com/identity/claims/tenantid",
    "idp": "http://schemas.microsoft.com/identity/claims/identityprovider",
}


@dataclass
class DeliveryConfig:
    """Where and how resource events are delivered (all times in twin-clock seconds)."""

    url: str | None = None
    schema: str = "eventgrid"  # "eventgrid" (array of events) or "cloudevents" (one CloudEvent per POST)
    subscription_name: str = "skr-orchestrator"
    delay_seconds: float = 0.0  # added to every delivery
    jitter_seconds: float = 0.0  # extra uniform(0, jitter) per delivery
    reorder_window_seconds: float = 0.0  # extra uniform(0, window): events overtake each other
    duplicate_rate: float = 0.0  # probability an event is delivered twice
    duplicate_delay_seconds: float = 1.0
    drop_rate: float = 0.0  # probability an event is silently lost
    retry_delays: tuple[float, ...] = (10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200)
    max_attempts: int = 30
    ttl_seconds: float = 86_400.0
    timeout_seconds: float = 30.0  # real seconds the webhook has to answer
    validate: bool = True  # run the subscription validation handshake first
    operation_names: tuple[str, ...] = ()  # deliver only these operationName values (empty = all)

    def check(self) -> None:
        if self.schema not in SCHEMAS:
            raise ValueError(f"event schema must be one of {SCHEMAS}, got {self.schema!r}")
        for name in ("duplicate_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        for name in ("delay_seconds", "jitter_seconds", "reorder_window_seconds", "duplicate_delay_seconds",
                     "ttl_seconds", "timeout_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_attempts < 1 or not self.retry_delays or any(d < 0 for d in self.retry_delays):
            raise ValueError("max_attempts must be >= 1 and retry_delays a non-empty list of non-negative seconds")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"webhook url must be http(s), got {self.url!r}")

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["retry_delays"] = list(self.retry_delays)
        data["operation_names"] = list(self.operation_names)
        return data


@dataclass
class _Validation:
    status: str = "not_configured"  # not_configured | pending | awaiting_manual | validated | failed
    code: str = ""
    detail: str = ""
    manual: asyncio.Event | None = field(default=None, repr=False)


class Events:
    def __init__(self, twin: Twin, config: DeliveryConfig) -> None:
        self._twin = twin
        self._lock = threading.RLock()
        config.check()
        self.config = config
        self.emitted: list[dict[str, Any]] = []  # every resource event, Event Grid schema
        self.deliveries: list[dict[str, Any]] = []  # every delivery attempt and its outcome
        self.published: list[dict[str, Any]] = []  # what clients sent to the twin's topic
        self._validation = _Validation(status="pending" if config.url else "not_configured")
        self._validation_lock: asyncio.Lock | None = None
        self._timers: set[TimerHandle] = set()
        self._held: list[dict[str, Any]] | None = None
        self._drop_next = 0
        self._duplicate_next = 0
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self.topic_key = base64.b64encode(secrets.token_bytes(32)).decode()  # the topic's access key

    # ---------------------------------------------------------------------- configuration
    def configure(self, **changes: Any) -> DeliveryConfig:
        """Change delivery settings (DeliveryConfig field names); a new URL is validated again."""
        known = {f.name for f in fields(DeliveryConfig)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown delivery settings {sorted(unknown)}; known: {sorted(known)}")
        for key in ("retry_delays", "operation_names"):
            if key in changes and changes[key] is not None:
                changes[key] = tuple(changes[key])
        candidate = DeliveryConfig(**{**asdict(self.config), **changes})
        candidate.check()
        with self._lock:
            url_changed = candidate.url != self.config.url or candidate.schema != self.config.schema
            self.config = candidate
            if url_changed:
                self._validation = _Validation(status="pending" if candidate.url else "not_configured")
        return candidate

    @property
    def validation(self) -> dict[str, str]:
        return {"status": self._validation.status, "detail": self._validation.detail}

    def drop_next(self, count: int = 1) -> None:
        """Lose the next ``count`` events (recorded as dropped)."""
        with self._lock:
            self._drop_next += count

    def duplicate_next(self, count: int = 1) -> None:
        """Deliver each of the next ``count`` events twice."""
        with self._lock:
            self._duplicate_next += count

    def hold(self) -> None:
        """Keep new events back until :meth:`release` (to reorder them deterministically)."""
        with self._lock:
            if self._held is None:
                self._held = []

    def release(self, order: str = "fifo") -> int:
        """Deliver held events now, one after the other, in ``fifo``, ``reverse`` or ``shuffle`` order."""
        if order not in ("fifo", "reverse", "shuffle"):
            raise ValueError(f"release order must be fifo, reverse or shuffle, got {order!r}")
        with self._lock:
            held, self._held = self._held or [], None
        if order == "reverse":
            held.reverse()
        elif order == "shuffle":
            self._twin.rng.shuffle(held)
        if held:
            self._launch(self._deliver_sequence(held))
        return len(held)

    # ------------------------------------------------------------------------ building
    def claims(self, principal: Principal) -> dict[str, Any]:
        raw = self._twin.identity.claims_for(principal, "https://management.azure.com/")
        return {_CLAIM_URIS.get(k, k): str(v) for k, v in raw.items() if k not in ("sub",)}

    def resource_event(self, event_type: str, resource_id: str, operation_name: str, caller: Principal | str, *,
                       status: str = "Succeeded", http_method: str | None = None, url: str | None = None,
                       client_request_id: str | None = None, correlation_id: str | None = None,
                       decision: Decision | None = None, created: bool = False) -> dict[str, Any]:
        """Emit one ARM resource event (Event Grid schema) and schedule its delivery."""
        twin = self._twin
        principal = caller if isinstance(caller, Principal) else twin.principal(caller)
        if principal is None:
            raise KeyError(f"unknown caller principal {caller!r}")
        sub = twin.config.subscription_id
        provider = operation_name.split("/", 1)[0]
        evidence: dict[str, Any] = {"role": "Owner"}
        if decision is not None and decision.assignment is not None and decision.role is not None:
            evidence = {
                "role": decision.role.role_name,
                "roleAssignmentScope": decision.assignment.scope,
                "roleAssignmentId": decision.assignment.name.replace("-", ""),
                "roleDefinitionId": decision.role.guid.replace("-", ""),
                "principalId": principal.object_id.replace("-", ""),
                "principalType": principal.principal_type,
            }
        data: dict[str, Any] = {
            "authorization": {"scope": resource_id, "action": operation_name, "evidence": evidence},
            "claims": self.claims(principal),
            "correlationId": correlation_id or str(uuid.UUID(int=twin.rng.getrandbits(128), version=4)),
            "resourceProvider": provider,
            "resourceUri": resource_id,
            "operationName": operation_name,
            "status": status,
            "subscriptionId": sub,
            "tenantId": twin.config.tenant_id,
        }
        if http_method is not None and not created:
            data["httpRequest"] = {"clientRequestId": client_request_id or "", "clientIpAddress": "127.0.0.1",
                                   "method": http_method, "url": url or ""}
        event = {
            "subject": resource_id,
            "eventType": event_type,
            "eventTime": iso(twin.clock.time()),
            "id": str(uuid.UUID(int=twin.rng.getrandbits(128), version=4)),
            "data": data,
            "dataVersion": "2",
            "metadataVersion": "1",
            "topic": f"/subscriptions/{sub}",
        }
        with self._lock:
            self.emitted.append(event)
        self._schedule_new(event)
        return event

    def arm_event(self, request: Request, event_type: str, resource_id: str, operation_name: str,
                  caller: Principal, *, created: bool = False) -> dict[str, Any]:
        """A resource event for the ARM request being served (method, URL, RBAC evidence from it)."""
        return self.resource_event(
            event_type, resource_id, operation_name, caller, http_method=request.method, url=str(request.url),
            client_request_id=request.headers.get("x-ms-client-request-id"),
            correlation_id=request.headers.get("x-ms-correlation-request-id"),
            decision=request.scope.get("twin.decision"), created=created)

    # ------------------------------------------------------------------------ scheduling
    def _record(self, event: dict[str, Any], attempt: int, outcome: str, *, status: int | None = None,
                duplicate: bool = False, detail: str = "") -> None:
        with self._lock:
            self.deliveries.append({"event_id": event["id"], "subject": event["subject"],
                                    "operation": event["data"].get("operationName"), "attempt": attempt,
                                    "at": self._twin.clock.time(), "outcome": outcome, "status": status,
                                    "duplicate": duplicate, "detail": detail})

    def _schedule_new(self, event: dict[str, Any]) -> None:
        cfg = self.config
        if cfg.url is None:
            return
        if cfg.operation_names and event["data"]["operationName"].lower() not in {
                n.lower() for n in cfg.operation_names}:
            return
        rng = self._twin.rng
        with self._lock:
            drop = self._drop_next > 0 or (cfg.drop_rate > 0 and rng.random() < cfg.drop_rate)
            if self._drop_next > 0:
                self._drop_next -= 1
            duplicate = not drop and (self._duplicate_next > 0
                                      or (cfg.duplicate_rate > 0 and rng.random() < cfg.duplicate_rate))
            if duplicate and self._duplicate_next > 0:
                self._duplicate_next -= 1
            if drop:
                self._record(event, 0, "dropped", detail="dropped on demand")
                return
            if self._held is not None:
                self._held.append(event)
                if duplicate:
                    self._held.append(event)
                return
        delay = cfg.delay_seconds + rng.uniform(0, cfg.jitter_seconds) + rng.uniform(0, cfg.reorder_window_seconds)
        due = self._twin.clock.time() + delay
        self._schedule(event, due, 0)
        if duplicate:
            self._schedule(event, due + cfg.duplicate_delay_seconds, 0, duplicate=True)

    def _schedule(self, event: dict[str, Any], due: float, attempt: int, duplicate: bool = False) -> None:
        if self._closed:
            return
        holder: list[TimerHandle] = []

        def fire() -> None:
            with self._lock:
                if holder:
                    self._timers.discard(holder[0])
            self._launch(self._deliver_one(event, attempt, duplicate))

        handle = self._twin.clock.call_at(due, fire)
        holder.append(handle)
        with self._lock:
            self._timers.add(handle)

    def _launch(self, coro: Any) -> None:
        """Run ``coro`` on the twin's loop, holding the clock busy from hand-over to completion."""
        loop = self._twin.loop
        if loop is None or self._closed or loop.is_closed():
            coro.close()
            return
        clock = self._twin.clock
        clock.acquire_busy()

        async def wrapped() -> None:
            try:
                await coro
            finally:
                clock.release_busy()

        try:
            asyncio.run_coroutine_threadsafe(wrapped(), loop)
        except RuntimeError:
            coro.close()
            clock.release_busy()

    # -------------------------------------------------------------------------- delivery
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            context = ssl.create_default_context(cafile=self._twin.ca_bundle_path)
            self._client = httpx.AsyncClient(verify=context, timeout=self.config.timeout_seconds)
        return self._client

    async def _deliver_sequence(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            await self._deliver_one(event, 0, False)

    async def _deliver_one(self, event: dict[str, Any], attempt: int, duplicate: bool) -> None:
        cfg = self.config
        if cfg.url is None:
            self._record(event, attempt, "undeliverable", duplicate=duplicate, detail="no webhook configured")
            return
        if cfg.validate and not await self._ensure_validated():
            self._record(event, attempt, "undeliverable", duplicate=duplicate,
                         detail=f"subscription validation failed: {self._validation.detail}")
            return
        status, detail = await self._post(event, attempt)
        if status is not None and 200 <= status < 300:
            self._record(event, attempt, "delivered", status=status, duplicate=duplicate)
            return
        if status in NO_RETRY_STATUSES:
            self._record(event, attempt, "dead-lettered", status=status, duplicate=duplicate, detail=detail)
            return
        age = self._twin.clock.time() - _event_time(event)
        if attempt + 1 >= cfg.max_attempts or age >= cfg.ttl_seconds:
            self._record(event, attempt, "dead-lettered", status=status, duplicate=duplicate,
                         detail=f"retries exhausted: {detail}")
            return
        self._record(event, attempt, "failed", status=status, duplicate=duplicate, detail=detail)
        delay = cfg.retry_delays[min(attempt, len(cfg.retry_delays) - 1)]
        self._schedule(event, self._twin.clock.time() + delay, attempt + 1, duplicate)

    def _body_and_headers(self, event: dict[str, Any], attempt: int) -> tuple[bytes, dict[str, str]]:
        headers = {"aeg-event-type": "Notification", "aeg-subscription-name": self.config.subscription_name.upper(),
                   "aeg-delivery-count": str(attempt), "aeg-data-version": event["dataVersion"],
                   "aeg-metadata-version": event["metadataVersion"]}
        if self.config.schema == "cloudevents":
            cloud = {"specversion": "1.0", "type": event["eventType"], "source": event["topic"],
                     "subject": event["subject"], "id": event["id"], "time": event["eventTime"],
                     "datacontenttype": "application/json", "data": event["data"]}
            headers["content-type"] = "application/cloudevents+json; charset=utf-8"
            return json.dumps(cloud).encode(), headers
        headers["content-type"] = "application/json; charset=utf-8"
        return json.dumps([event]).encode(), headers

    async def _post(self, event: dict[str, Any], attempt: int) -> tuple[int | None, str]:
        body, headers = self._body_and_headers(event, attempt)
        assert self.config.url is not None
        try:
            response = await self._http().post(self.config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, response.text[:200]

    # ------------------------------------------------------------------------ validation
    async def _ensure_validated(self) -> bool:
        if self._validation_lock is None:
            self._validation_lock = asyncio.Lock()
        async with self._validation_lock:
            state = self._validation
            if state.status == "validated":
                return True
            if state.status == "failed":
                return False
            if state.status != "awaiting_manual":
                await self._handshake(state)
            if state.status == "awaiting_manual":
                assert state.manual is not None
                try:
                    await asyncio.wait_for(state.manual.wait(), timeout=self.config.timeout_seconds)
                except TimeoutError:
                    state.status, state.detail = "failed", "the validation URL was not called"
            return state.status == "validated"

    async def _handshake(self, state: _Validation) -> None:
        cfg, twin = self.config, self._twin
        assert cfg.url is not None
        state.code = str(uuid.UUID(int=twin.rng.getrandbits(128), version=4))
        state.manual = asyncio.Event()
        callback = f"{twin.urls.admin}/admin/events/validate?code={state.code}"
        try:
            if cfg.schema == "cloudevents":
                response = await self._http().request("OPTIONS", cfg.url, headers={
                    "WebHook-Request-Origin": "eventgrid.azure.net", "WebHook-Request-Callback": callback,
                    "WebHook-Request-Rate": "120"})
                allowed = response.headers.get("webhook-allowed-origin", "")
                ok = 200 <= response.status_code < 300 and allowed in ("eventgrid.azure.net", "*")
                detail = f"OPTIONS answered {response.status_code} with WebHook-Allowed-Origin '{allowed}'"
            else:
                event = {"id": str(uuid.uuid4()), "topic": f"/subscriptions/{twin.config.subscription_id}",
                         "subject": "", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                         "eventTime": iso(twin.clock.time()), "metadataVersion": "1", "dataVersion": "2",
                         "data": {"validationCode": state.code, "validationUrl": callback}}
                response = await self._http().post(cfg.url, content=json.dumps([event]).encode(), headers={
                    "aeg-event-type": "SubscriptionValidation", "content-type": "application/json",
                    "aeg-subscription-name": cfg.subscription_name.upper()})
                try:
                    answer = response.json().get("validationResponse")
                except (ValueError, AttributeError):
                    answer = None
                ok = 200 <= response.status_code < 300 and answer == state.code
                if 200 <= response.status_code < 300 and answer is None and not state.manual.is_set():
                    state.status, state.detail = "awaiting_manual", "waiting for a GET on the validation URL"
                    return
                detail = f"validation answered {response.status_code} with validationResponse {answer!r}"
        except httpx.HTTPError as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        if ok or state.manual.is_set():
            state.status, state.detail = "validated", "handshake succeeded"
        else:
            state.status, state.detail = "failed", detail

    def manual_validation(self, code: str) -> bool:
        """The webhook called the validation URL (GET): accept when the code matches."""
        state = self._validation
        if not code or code != state.code or state.manual is None:
            return False
        state.status, state.detail = "validated", "validated through the validation URL"
        loop = self._twin.loop
        if loop is not None:
            loop.call_soon_threadsafe(state.manual.set)
        return True

    # ---------------------------------------------------------------------------- close
    def close(self) -> None:
        """Stop delivering: pending timers are cancelled."""
        with self._lock:
            self._closed = True
            for handle in self._timers:
                handle.cancel()
            self._timers.clear()

    async def aclose(self) -> None:
        """Close the HTTP client (on the twin's loop, before it stops)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def reopen(self) -> None:
        self._closed = False


def _event_time(event: dict[str, Any]) -> float:
    return dt.datetime.strptime(event["eventTime"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()
