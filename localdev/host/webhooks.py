"""Event Grid delivery like the Functions Event Grid extension: one invocation per array element.

Notifications run concurrently; if any invocation raises, the webhook answers 500 with the
error text (Event Grid would retry the whole batch), else 202. The SubscriptionValidation
handshake (Event Grid schema) and the CloudEvents ``OPTIONS`` abuse-protection handshake are
answered. Exceptions are logged by the invoker and never reach the host.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from localdev.host.invoke import Invoker
from localdev.host.registry import Registry

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"


async def deliver(invoker: Invoker, info: Any, events: list[Mapping[str, Any]]) -> tuple[int, str]:
    """Invoke ``info`` once per event; (status, text) as the webhook would answer."""
    results = await asyncio.gather(*(invoker.event(info, event) for event in events), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        first = failures[0]
        return 500, f"Exception while executing function: Functions.{info.name}. {type(first).__name__}: {first}"
    return 202, ""


class EventGridWebhook:
    def __init__(self, registry: Registry, invoker: Invoker) -> None:
        self.registry = registry
        self.invoker = invoker

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("functionName")
        if not name:
            return web.Response(status=400, text="the functionName query parameter is required")
        info = self.registry.event_grid.get(name)
        if info is None:
            known = ", ".join(sorted(self.registry.event_grid)) or "none"
            return web.Response(status=404, text=f"cannot find Event Grid function '{name}' (known: {known})")
        if request.method == "OPTIONS":
            origin = request.headers.get("WebHook-Request-Origin")
            if not origin:
                return web.Response(status=400, text="CloudEvents validation needs a WebHook-Request-Origin header")
            return web.Response(status=200, headers={"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"})
        if request.method != "POST":
            return web.Response(status=405)
        try:
            body = json.loads(await request.text())
        except ValueError as exc:
            return web.Response(status=400, text=f"the Event Grid request body is not JSON: {exc}")
        events = body if isinstance(body, list) else [body]
        if not all(isinstance(e, dict) for e in events):
            return web.Response(status=400, text="Event Grid events must be JSON objects")
        kind = request.headers.get("aeg-event-type", "Notification")
        if kind == "SubscriptionValidation":
            first = events[0] if events else {}
            code = (first.get("data") or {}).get("validationCode")
            if first.get("eventType") != VALIDATION_EVENT or not code:
                return web.Response(status=400, text="SubscriptionValidation needs a validation event with a code")
            return web.json_response({"validationResponse": code})
        if kind == "Unsubscribe":
            return web.Response(status=202)
        if kind != "Notification":
            return web.Response(status=400, text=f"unsupported aeg-event-type {kind!r}")
        status, text = await deliver(self.invoker, info, events)
        return web.Response(status=status, text=text)
