"""The twin's listeners: one asyncio loop in a daemon thread running a uvicorn server per service.

Sockets are bound before the loop starts, so every URL is known at once; all listeners speak TLS
with the twin's own certificate except IMDS and the managed-identity endpoint (plain HTTP on
loopback, like Azure's). Each request holds the clock busy while it is served and passes the
fault middleware first.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from localdev.twin import admin, authorization, compute_vms, eventgrid, keyvault, operations
from localdev.twin.gate import bearer_token
from localdev.twin.http import TwinHttpError, arm_error_response, kv_error_response
from localdev.twin.model import Vault

if TYPE_CHECKING:
    from localdev.twin.core import Twin

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
log = logging.getLogger("localdev.twin")


def _external_routes(module: str, twin: Twin) -> list[BaseRoute]:
    """Routes of a twin service module (``routes(twin)``)."""
    found: list[BaseRoute] = importlib.import_module(f"localdev.twin.{module}").routes(twin)
    return found


class TwinMiddleware:
    """Per listener: names the service, holds the clock busy, applies request faults, adds headers."""

    def __init__(self, app: ASGIApp, twin: Twin, service: str, vault: Vault | None = None) -> None:
        self.app, self.twin, self.service, self.vault = app, twin, service, vault

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope["twin"] = self.twin
        scope["twin.service"] = self.service
        scope["twin.vault"] = self.vault
        clock = self.twin.clock
        clock.acquire_busy()
        try:
            refusal = await self._faults(scope)
            if refusal is not None:
                request = Request(scope)
                self.twin.counters.record(self.twin.identity.caller_of(bearer_token(request)), self.service,
                                          f"fault:{scope['twin.fault']}")
                await refusal(scope, receive, send)
                return

            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    extra = scope.get("twin.response_headers") or {}
                    headers = list(message.get("headers", []))
                    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
                    headers.append((b"x-ms-request-id", str(uuid.uuid4()).encode()))
                    message["headers"] = headers
                await send(message)

            await self.app(scope, receive, send_with_headers)
        finally:
            clock.release_busy()

    async def _faults(self, scope: Scope) -> Response | None:
        if self.service == "admin":
            return None
        faults = self.twin.faults
        attrs = {"service": self.service, "path": scope.get("path", ""), "method": scope.get("method", ""),
                 "vault": self.vault.name if self.vault else None}
        latency = faults.active("latency", **attrs)
        if latency is not None:
            clock = self.twin.clock
            clock.release_busy()
            try:
                await clock.sleep_async(float(latency.params.get("seconds", 0)))
            finally:
                clock.acquire_busy()
        outage = {"keyvault": "kv_outage", "maa": "maa_outage"}.get(self.service)
        if outage and faults.active(outage, **attrs) is not None:
            scope["twin.fault"] = outage
            return self._error(503, "ServiceUnavailable", "The service is temporarily unavailable (twin fault).")
        error = faults.active("error", **attrs)
        if error is not None:
            scope["twin.fault"] = "error"
            status = int(error.params.get("status", 503))
            return self._error(status, str(error.params.get("code", "InternalServerError" if status == 500 else
                                                              "ServiceUnavailable")),
                               str(error.params.get("message", f"Injected {status} (twin fault).")))
        storm = faults.active("throttle_storm", **attrs)
        if storm is not None:
            scope["twin.fault"] = "throttle_storm"
            retry_after = max(1, int(storm.params.get("retry_after", 5)))
            headers = {"Retry-After": str(retry_after)}
            if self.service == "arm":
                headers["x-ms-ratelimit-remaining-subscription-reads"] = "0"
                return arm_error_response(429, "TooManyRequests", "The request was throttled (twin 429 storm). "
                                          f"Please try again after '{retry_after}' seconds.", headers=headers)
            return kv_error_response(429, "Throttled", f"Request was not processed because too many requests were "
                                     f"received. Reason: twin 429 storm. Retry after {retry_after} seconds.",
                                     headers=headers)
        return None

    def _error(self, status: int, code: str, message: str) -> Response:
        if self.service in ("arm", "keyvault", "events"):
            return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
        return JSONResponse({"error": code, "error_description": message}, status_code=status)


async def _twin_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, TwinHttpError)
    return exc.response


def _fallback(service: str) -> Route:
    async def not_found(request: Request) -> Response:
        if service == "arm":
            return arm_error_response(404, "InvalidResourceType", f"The resource type could not be found for "
                                      f"'{request.method} {request.url.path}' in this twin.")
        if service == "keyvault":
            return kv_error_response(404, "NotFound", f"The twin vault has no route {request.method} "
                                     f"{request.url.path}.")
        return JSONResponse({"error": "not_found", "path": request.url.path}, status_code=404)

    return Route("/{path:path}", not_found, methods=["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"])


@dataclass
class Listener:
    name: str
    service: str
    app: Starlette
    tls: bool
    vault: Vault | None = None
    sock: socket.socket | None = None

    @property
    def port(self) -> int:
        assert self.sock is not None
        port: int = self.sock.getsockname()[1]
        return port


class TwinServer:
    """Owns the sockets, the loop thread and the uvicorn servers of one twin."""

    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[uvicorn.Server] = []
        self._extra_tasks: list[asyncio.Future[None]] = []
        self._failure: BaseException | None = None
        self._main: asyncio.Task[Any] | None = None
        self.listeners = self._listeners()

    def _app(self, service: str, routes: list[BaseRoute], vault: Vault | None = None) -> Starlette:
        app = Starlette(routes=[*routes, _fallback(service)], exception_handlers={TwinHttpError: _twin_error})
        app.add_middleware(TwinMiddleware, twin=self.twin, service=service, vault=vault)
        return app

    def _listeners(self) -> list[Listener]:
        twin = self.twin
        arm_routes = [*_external_routes("runcommands", twin), *operations.routes(twin), *compute_vms.routes(twin),
                      *authorization.routes(twin)]
        vault_routes = [*_external_routes("release", twin), *keyvault.routes(twin)]
        listeners = [Listener("arm", "arm", self._app("arm", arm_routes), tls=True)]
        for vault in twin.vaults.values():
            listeners.append(Listener(f"vault:{vault.name}", "keyvault",
                                      self._app("keyvault", vault_routes, vault), tls=True, vault=vault))
        listeners += [
            Listener("maa", "maa", self._app("maa", _external_routes("maa", twin)), tls=True),
            Listener("imds", "imds", self._app("imds", _external_routes("imds", twin)), tls=False),
            Listener("identity", "identity", self._app("identity", twin.identity.routes()), tls=False),
            Listener("events", "events", self._app("events", eventgrid.routes(twin)), tls=True),
            Listener("admin", "admin", self._app("admin", admin.routes(twin)), tls=True),
        ]
        return listeners

    def _bind(self) -> None:
        for listener in self.listeners:
            self._bind_one(listener)

    def _bind_one(self, listener: Listener) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.twin.config.host, 0))
        sock.listen(256)
        sock.setblocking(False)
        listener.sock = sock

    def _uvicorn(self, listener: Listener) -> uvicorn.Server:
        kwargs: dict[str, Any] = {}
        if listener.tls:
            kwargs = {"ssl_certfile": str(self.twin.tls.cert_path), "ssl_keyfile": str(self.twin.tls.key_path)}
        config = uvicorn.Config(listener.app, log_level="warning", access_log=False, lifespan="off",
                                http="h11", ws="none", timeout_graceful_shutdown=1, timeout_keep_alive=30,
                                **kwargs)
        return uvicorn.Server(config)

    def add_listener(self, name: str, service: str, routes: list[BaseRoute], *, tls: bool = False,
                     timeout: float = 10.0) -> str:
        """Serve ``routes`` on one more loopback port of the running twin; returns its base URL.

        Used for listeners that appear on demand (each simulated VM's own IMDS origin). Call from
        any thread except the twin's loop.
        """
        loop = self.loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the twin is not running")
        if threading.current_thread() is self._thread:
            raise RuntimeError("add_listener would deadlock on the twin's own loop; call it from another thread")
        listener = Listener(name, service, self._app(service, routes), tls=tls)
        self._bind_one(listener)
        server = self._uvicorn(listener)
        sock = listener.sock
        assert sock is not None

        async def launch() -> None:
            self._extra_tasks.append(asyncio.ensure_future(server.serve(sockets=[sock])))
            while not server.started:
                await asyncio.sleep(0.002)

        asyncio.run_coroutine_threadsafe(launch(), loop).result(timeout)
        self.listeners.append(listener)
        self._servers.append(server)
        return f"{'https' if tls else 'http'}://{self.twin.config.host}:{listener.port}"

    def _publish_urls(self) -> None:
        twin, host = self.twin, self.twin.config.host
        urls = twin.urls
        for listener in self.listeners:
            base = f"{'https' if listener.tls else 'http'}://{host}:{listener.port}"
            if listener.vault is not None:
                listener.vault.url = base
                urls.vaults[listener.vault.name] = base
            elif listener.name == "identity":
                urls.identity = f"{base}/msi/token"
            elif listener.name == "events":
                urls.events = f"{base}/api/events"
            else:
                setattr(urls, listener.name, base)

    def start(self, timeout: float = 15.0) -> None:
        self._bind()
        self._publish_urls()
        for listener in self.listeners:
            self._servers.append(self._uvicorn(listener))
        self.twin.events.reopen()
        self._thread = threading.Thread(target=self._run, name="azure-twin", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not all(s.started for s in self._servers):
            if self._failure is not None or not self._thread.is_alive():
                raise RuntimeError(f"the twin failed to start: {self._failure!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("the twin did not start in time")
            time.sleep(0.005)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            loop.run_until_complete(self._serve())
        except asyncio.CancelledError:
            pass  # stop() ends the servers this way
        except BaseException as exc:  # surfaced by start()
            self._failure = exc
            log.exception("twin server loop failed")
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._main = asyncio.current_task()
        await asyncio.gather(*(server.serve(sockets=[listener.sock])
                               for server, listener in zip(self._servers, self.listeners, strict=True)
                               if listener.sock is not None))
        if self._extra_tasks:  # listeners added while running (add_listener)
            await asyncio.gather(*self._extra_tasks, return_exceptions=True)

    async def _shutdown(self) -> None:
        """Close the listening sockets, cut open connections and end the servers at once."""
        for server in self._servers:
            server.should_exit = True
            for asyncio_server in getattr(server, "servers", []):
                asyncio_server.close()
            for connection in list(server.server_state.connections):
                transport = getattr(connection, "transport", None)
                if transport is not None:
                    transport.abort()
        if self._main is not None:
            self._main.cancel()

    def stop(self) -> None:
        self.twin.events.close()
        loop = self.loop
        if loop is not None and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(self.twin.events.aclose(), loop).result(timeout=5)
            except Exception:  # a closing client must not block shutdown
                log.debug("closing the event client failed", exc_info=True)
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=10)
        for listener in self.listeners:
            if listener.sock is not None:
                listener.sock.close()
