"""The extension's HTTP API (``HttpApiHandler``) under ``/durabletask/`` and ``/runtime/webhooks/durabletask/``.

Routes, status codes and payloads follow the extension so the real ``DurableOrchestrationClient``
works unchanged: ``orchestrators/{name}[/{id}]``, ``instances/[{id}[/{operation}]]``,
``instances/{id}/raiseEvent/{event}``. Entities are not implemented and answer 501.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from localdev.host.engine import ConflictError, Engine, QueryError, StartError
from localdev.host.episode import compact
from localdev.host.status import http_status_code, status_payload
from localdev.host.store import RUNTIME_STATUSES, TERMINAL, Query
from localdev.host.timefmt import parse_ticks
from localdev.host.urls import HostUrls

_OPERATIONS = ("terminate", "rewind", "restart", "suspend", "resume")


def error(
    status: int, message: str, exception: str | None = None, kind: str = "System.ArgumentException"
) -> web.Response:
    """``request.CreateErrorResponse``: ASP.NET's HttpError JSON."""
    body: dict[str, Any] = {"Message": message}
    if exception is not None:
        body.update(ExceptionMessage=exception, ExceptionType=kind, StackTrace=None)
    return web.json_response(body, status=status)


def _bool(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    return lowered == "true" if lowered in ("true", "false") else default


def _int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _time(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        return parse_ticks(value)
    except ValueError as exc:
        raise QueryError(f"query parameter {name}={value!r} is not a date-time") from exc


def _statuses(request: web.Request) -> frozenset[str] | None:
    raw = request.query.getall("runtimeStatus", [])
    names = [part.strip() for value in raw for part in value.split(",") if part.strip()]
    unknown = [n for n in names if n not in RUNTIME_STATUSES]
    if unknown:
        raise QueryError(f"unknown runtimeStatus value(s) {unknown}; expected some of {list(RUNTIME_STATUSES)}")
    return frozenset(names) if names else None


class RpcApi:
    def __init__(self, engine: Engine, urls: HostUrls | None = None) -> None:
        self.engine = engine
        self.urls = urls  # known once the server is bound to its port

    async def handle(self, request: web.Request) -> web.StreamResponse:
        segments = [s for s in request.match_info["tail"].split("/") if s]
        method = request.method
        try:
            if not segments:
                return web.Response(status=404)
            head = segments[0].lower()
            if head == "orchestrators" and len(segments) in (2, 3):
                if method != "POST":
                    return web.Response(status=404)
                return await self._start(request, segments[1], segments[2] if len(segments) == 3 else None)
            if head == "entities":
                return error(501, "Durable entities are not supported by the local Durable host.")
            if head != "instances":
                return web.Response(status=404)
            return await self._instances(request, segments[1:])
        except QueryError as exc:
            return error(400, "One or more of the arguments submitted is incorrect", str(exc))

    async def _instances(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        method = request.method
        if not rest:
            if method == "GET":
                return self._list(request)
            if method == "DELETE":
                return self._purge_matching(request)
            return web.Response(status=404)
        instance_id = rest[0]
        if len(rest) == 1:
            if method == "GET":
                return self._status(request, instance_id)
            if method == "DELETE":
                return self._purge(instance_id)
            return web.Response(status=404)
        if len(rest) == 3 and rest[1] == "raiseEvent" and method == "POST":
            return await self._raise(request, instance_id, rest[2])
        if len(rest) == 2 and method == "POST" and rest[1].lower() in _OPERATIONS:
            return await self._operation(request, instance_id, rest[1].lower())
        return web.Response(status=404)

    # --- handlers ---------------------------------------------------------------------------------
    async def _start(self, request: web.Request, name: str, instance_id: str | None) -> web.StreamResponse:
        body = await request.text()
        if body:
            try:
                json.loads(body)
            except ValueError as exc:
                return error(400, "Invalid JSON content", str(exc), "Newtonsoft.Json.JsonReaderException")
        try:
            started = self.engine.start_instance(name, body or None, instance_id, request.query.get("version"))
        except StartError as exc:
            return error(400, "One or more of the arguments submitted is incorrect", str(exc))
        except ConflictError as exc:
            return error(409, str(exc))
        return await self._check_status(request, started)

    async def _check_status(self, request: web.Request, instance_id: str) -> web.StreamResponse:
        timeout, interval = _int(request, "timeout"), _int(request, "pollingInterval")
        if timeout is not None and interval is not None:
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                row = self.engine.store.get(instance_id)
                if row is not None and row.status in TERMINAL:
                    if row.status == "Completed":
                        return web.Response(status=200, text=row.output or "null", content_type="application/json")
                    return self._status(request, instance_id)
                await asyncio.sleep(min(interval, 1))
        assert self.urls is not None
        links = self.urls.management(instance_id, origin=f"{request.scheme}://{request.host}")
        payload = {key: value for key, value in links.items() if key != "rewindPostUri"}
        return web.json_response(
            payload, status=202, headers={"Location": links["statusQueryGetUri"], "Retry-After": "10"}
        )

    def _status(self, request: web.Request, instance_id: str) -> web.StreamResponse:
        row = self.engine.store.get(instance_id)
        if row is None:
            return web.Response(status=404)
        history = self.engine.store.history(instance_id) if _bool(request, "showHistory", False) else None
        payload = status_payload(
            row,
            show_input=_bool(request, "showInput", True),
            history=history,
            show_history_output=_bool(request, "showHistoryOutput", False),
        )
        code = http_status_code(
            row, server_error_on_failure=_bool(request, "returnInternalServerErrorOnFailure", False)
        )
        headers = {"Location": str(request.url), "Retry-After": "5"} if code == 202 else {}
        return web.json_response(payload, status=code, headers=headers)

    def _query(self, request: web.Request) -> Query:
        return Query(
            created_from=_time(request, "createdTimeFrom"),
            created_to=_time(request, "createdTimeTo"),
            statuses=_statuses(request),
            prefix=request.query.get("instanceIdPrefix"),
        )

    def _list(self, request: web.Request) -> web.StreamResponse:
        rows, token = self.engine.list_page(
            self._query(request), _int(request, "top"), request.headers.get("x-ms-continuation-token")
        )
        show_input = _bool(request, "showInput", True)
        payload = [status_payload(row, show_input=show_input) for row in rows]
        return web.json_response(payload, headers={"x-ms-continuation-token": token or ""})

    def _purge(self, instance_id: str) -> web.StreamResponse:
        result = self.engine.purge(instance_id)
        if result == "not_found":
            return web.Response(status=404)
        if result == "not_terminal":
            row = self.engine.store.get(instance_id)
            return web.json_response(
                "Only orchestrations in a terminal state can be purged, but the orchestration with instance ID "
                f"{instance_id} has status {row.status if row else 'unknown'}",
                status=412,
            )
        return web.json_response({"instancesDeleted": 1})

    def _purge_matching(self, request: web.Request) -> web.StreamResponse:
        query = self._query(request)
        if query.created_from is None:
            return web.json_response("Please provide value for 'createdTimeFrom' parameter.", status=400)
        if query.created_to is None:
            query = Query(query.created_from, self.engine.now_ticks(), query.statuses, query.prefix)
        deleted = self.engine.purge_matching(query)
        if deleted == 0:
            return web.Response(status=404)
        return web.json_response({"instancesDeleted": deleted})

    async def _raise(self, request: web.Request, instance_id: str, event_name: str) -> web.StreamResponse:
        row = self.engine.store.get(instance_id)
        if row is None:
            return web.Response(status=404)
        if row.terminal:
            return web.Response(status=410)
        if request.content_type.lower() != "application/json":
            return error(400, "Only application/json request content is supported")
        text = await request.text()
        try:
            data = json.loads(text) if text else None
        except ValueError as exc:
            return error(400, "Invalid JSON content", str(exc), "Newtonsoft.Json.JsonReaderException")
        # RaiseEventAsync re-serialises the parsed body: the Python client's string stays a string.
        outcome = self.engine.raise_event(instance_id, event_name, None if data is None else compact(data))
        return web.Response(status={"accepted": 202, "not_found": 404, "gone": 410}[outcome])

    async def _operation(self, request: web.Request, instance_id: str, operation: str) -> web.StreamResponse:
        reason = request.query.get("reason")
        if operation == "restart":
            fresh = _bool(request, "restartWithNewInstanceId", True)
            try:
                started = self.engine.restart(instance_id, fresh)
            except ConflictError as exc:
                return error(409, "A non-terminal instance with this instance ID already exists.", str(exc))
            if started is None:
                return error(
                    400,
                    "InstanceId does not match a valid orchestration instance.",
                    f"No orchestration instance with ID '{instance_id}' was found.",
                )
            return await self._check_status(request, started)
        if operation == "rewind":
            row = self.engine.store.get(instance_id)
            if row is None:
                return web.json_response(f'No orchestration with instance ID "${instance_id}" found.', status=404)
            if row.status != "Failed":
                return web.json_response(
                    f'This orchestration has status {row.status}, but only orchestrations in the "Failed" state '
                    "can be rewound.",
                    status=412,
                )
            return error(501, "Rewind is not supported by the underlying storage provider.")
        if operation == "terminate":
            outcome = self.engine.terminate(instance_id, reason)
        elif operation == "suspend":
            outcome = self.engine.suspend(instance_id)
        else:
            outcome = self.engine.resume(instance_id)
        return web.Response(status={"accepted": 202, "not_found": 404, "gone": 410}[outcome])
