"""The host's single aiohttp server: app routes, the extension's RPC/webhook routes, Event Grid, admin.

Auth (``function``/``admin`` level routes, webhooks, admin API): with no key configured every
request is accepted, ``code``/``x-functions-key`` or not (like ``func start``); with a key, it must
come as ``?code=`` or the ``x-functions-key`` header, else 401. ``anonymous`` routes and the
loopback RPC base (``/durabletask/``) never need one.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from localdev.clock import VirtualClock
from localdev.host.engine import Engine
from localdev.host.invoke import HttpCall, Invoker
from localdev.host.logs import scoped
from localdev.host.routes import RouteTemplate
from localdev.host.rpc import RpcApi
from localdev.host.status import status_payload
from localdev.host.store import Query
from localdev.host.triggers import TimerTriggers
from localdev.host.urls import HostUrls
from localdev.host.webhooks import EventGridWebhook, deliver

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 0
    route_prefix: str = "api"
    function_key: str | None = None
    connection_name: str = "Storage"


class HostServer:
    def __init__(self, engine: Engine, invoker: Invoker, triggers: TimerTriggers, config: ServerConfig) -> None:
        self.engine = engine
        self.invoker = invoker
        self.triggers = triggers
        self.config = config
        self.urls: HostUrls | None = None
        self._runner: web.AppRunner | None = None
        self._routes = sorted(
            ((RouteTemplate.parse(info.route), info) for info in engine.registry.http),
            key=lambda pair: pair[0].precedence,
        )
        self._event_grid = EventGridWebhook(engine.registry, invoker)

    def client_binding(self, info: Any) -> str:
        assert self.urls is not None, "server not started"
        return self.urls.client_binding(info.client_task_hub, info.client_connection)

    async def start(self) -> HostUrls:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        rpc = RpcApi(self.engine)
        router = app.router
        router.add_route("*", "/durabletask/{tail:.*}", rpc.handle)
        router.add_route("*", "/runtime/webhooks/durabletask/{tail:.*}", self._keyed(rpc.handle))
        router.add_route("*", "/runtime/webhooks/eventgrid", self._keyed(self._event_grid.handle))
        router.add_route("*", "/admin/{tail:.*}", self._keyed(self._admin))
        prefix = self.config.route_prefix.strip("/")
        router.add_route("*", f"/{prefix}/{{tail:.*}}" if prefix else "/{tail:.*}", self._app_route)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        self.urls = rpc.urls = HostUrls(
            f"http://{shown}:{port}",
            self.engine.config.task_hub,
            self.config.connection_name,
            self.config.function_key,
        )
        return self.urls

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- plumbing ---------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        with self.engine.working(), scoped(self.engine.scope):
            return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        key = self.config.function_key
        if not key:
            return True
        offered = request.query.get("code") or request.headers.get("x-functions-key") or ""
        return hmac.compare_digest(offered.encode(), key.encode())

    def _keyed(self, handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            if not self._authorized(request):
                return web.Response(status=401, text="a valid function key is required (code= or x-functions-key)")
            return await handler(request)

        return checked

    # --- the app's HTTP functions -------------------------------------------------------------------
    async def _app_route(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["tail"]
        for template, info in self._routes:
            params = template.match(path)
            if params is not None and request.method in info.methods:
                break
        else:
            return web.Response(status=404, text=f"no HTTP function matches {request.method} {request.path}")
        if info.auth_level != "anonymous" and not self._authorized(request):
            return web.Response(status=401, text="a valid function key is required (code= or x-functions-key)")
        call = HttpCall(
            method=request.method,
            url=str(request.url),
            headers={k: v for k, v in request.headers.items()},
            query={k: v for k, v in request.query.items()},
            route_params=params,
            body=await request.read(),
        )
        reply = await self.invoker.http(info, call)
        return web.Response(status=reply.status, body=reply.body, headers=CIMultiDict(reply.headers))

    # --- admin ------------------------------------------------------------------------------------
    async def _admin(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p]
        clock = self.engine.clock
        if parts == ["host", "status"]:
            return web.json_response(
                {"state": "Running", "version": "localdev", "functions": len(self.engine.registry.functions)}
            )
        if parts == ["clock"] and request.method == "GET":
            return web.json_response(self.clock_info())
        if parts == ["clock", "advance"] and request.method == "POST":
            if not isinstance(clock, VirtualClock):
                return web.json_response({"error": f"the {clock.kind} clock cannot be advanced"}, status=400)
            try:
                seconds = float((await request.json()).get("seconds"))
            except (ValueError, TypeError, AttributeError):
                return web.json_response({"error": 'body must be {"seconds": <number>}'}, status=400)
            if seconds < 0:
                return web.json_response({"error": "seconds must not be negative"}, status=400)
            clock.advance(seconds)
            return web.json_response(self.clock_info())
        if parts == ["instances"] and request.method == "GET":
            rows = self.engine.store.query(Query(prefix=request.query.get("prefix")))
            return web.json_response([status_payload(r, show_input=False) for r in rows])
        if parts == ["functions"] and request.method == "GET":
            return web.json_response(self.engine.registry.describe())
        if len(parts) == 2 and parts[0] == "functions" and request.method == "POST":
            return await self._invoke_function(request, parts[1])
        return web.Response(status=404)

    async def _invoke_function(self, request: web.Request, name: str) -> web.StreamResponse:
        registry = self.engine.registry
        if name in registry.timers:
            await self.triggers.run_now(name)
            return web.Response(status=202)
        if name in registry.event_grid:
            text = await request.text()
            try:
                event = json.loads(json.loads(text).get("input") or "{}") if text else {}
            except (ValueError, AttributeError):
                return web.json_response({"error": 'body must be {"input": "<event JSON text>"}'}, status=400)
            status, message = await deliver(self.invoker, registry.event_grid[name], [event])
            return web.Response(status=status, text=message)
        if name in registry.functions:
            kind = registry.functions[name].kind
            return web.json_response({"error": f"{name} is a {kind} function; it cannot be run on request"}, status=400)
        return web.json_response({"error": f"no function named {name!r}"}, status=404)

    def clock_info(self) -> dict[str, Any]:
        clock = self.engine.clock
        info: dict[str, Any] = {
            "kind": clock.kind,
            "now": clock.now().isoformat(),
            "epoch": clock.time(),
            "pendingDurableTimers": len(self.engine.pending()["timers"]),
        }
        if isinstance(clock, VirtualClock):
            info["jumps"] = clock.jumps
        return info
