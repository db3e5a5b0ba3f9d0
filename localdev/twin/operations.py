"""ARM long-running operations: ``Azure-AsyncOperation`` status and ``Location`` result URLs.

A service starts an :class:`Operation`, answers 201/202 with :meth:`Operations.headers`, and later
calls ``finish``. Clients poll ``.../locations/{loc}/operations/{id}`` (status JSON) and
``...?monitor=true`` (202 until done, then the result body with 200, or 204 without one).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from localdev.twin.arm import require_subscription
from localdev.twin.http import arm_fail, ci_route
from localdev.twin.rbac import iso

if TYPE_CHECKING:
    from localdev.twin.core import Twin

TERMINAL = ("Succeeded", "Failed", "Canceled")


@dataclass
class Operation:
    id: str
    resource_id: str
    location: str
    kind: str
    start_time: float
    status: str = "InProgress"
    end_time: float | None = None
    error: dict[str, Any] | None = None
    result: Any = None  # body of the final Location GET (None -> 204)
    on_done: list[Callable[[Operation], None]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def as_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.id, "status": self.status, "startTime": iso(self.start_time)}
        if self.end_time is not None:
            body["endTime"] = iso(self.end_time)
        if self.error is not None:
            body["error"] = self.error
        return body


class Operations:
    def __init__(self, twin: Twin) -> None:
        self._twin = twin
        self._lock = threading.Lock()
        self._ops: dict[str, Operation] = {}

    def start(self, resource_id: str, *, location: str, kind: str, done_in: float | None = None,
              on_done: Callable[[Operation], None] | None = None) -> Operation:
        """A new in-progress operation; with ``done_in`` it succeeds that many seconds later (twin clock)."""
        op = Operation(id=str(uuid.uuid4()), resource_id=resource_id, location=location.lower().replace(" ", ""),
                       kind=kind, start_time=self._twin.clock.time())
        if on_done is not None:
            op.on_done.append(on_done)
        with self._lock:
            self._ops[op.id] = op
        if done_in is not None:
            self._twin.clock.call_later(max(0.0, done_in), lambda: self.finish(op))
        return op

    def finish(self, op: Operation, status: str = "Succeeded", *, result: Any = None,
               error: dict[str, Any] | None = None) -> None:
        """Mark ``op`` terminal (idempotent) and run its callbacks."""
        if status not in TERMINAL:
            raise ValueError(f"operation status must be one of {TERMINAL}, got {status!r}")
        with self._lock:
            if op.done:
                return
            op.status, op.end_time, op.error = status, self._twin.clock.time(), error
            if result is not None:
                op.result = result
        for callback in op.on_done:
            callback(op)

    def get(self, op_id: str) -> Operation | None:
        with self._lock:
            return self._ops.get(op_id.lower())

    def urls(self, op: Operation, api_version: str) -> tuple[str, str]:
        """(Azure-AsyncOperation URL, Location URL)."""
        base = (f"{self._twin.urls.arm}/subscriptions/{self._twin.config.subscription_id}/providers/"
                f"Microsoft.Compute/locations/{op.location}/operations/{op.id}")
        return f"{base}?api-version={api_version}", f"{base}?monitor=true&api-version={api_version}"

    def headers(self, op: Operation, api_version: str) -> dict[str, str]:
        async_url, location_url = self.urls(op, api_version)
        return {"Azure-AsyncOperation": async_url, "Location": location_url}

    async def status(self, request: Request) -> Response:
        twin = self._twin
        require_subscription(twin, request.path_params["sub"])
        twin.arm_call(request, "Microsoft.Compute/locations/operations/read",
                      f"/subscriptions/{twin.config.subscription_id}", authorize=False)
        op = self.get(request.path_params["op"])
        if op is None:
            raise arm_fail(404, "NotFound", f"The operation '{request.path_params['op']}' was not found.")
        if request.query_params.get("monitor", "").lower() == "true":
            if not op.done:
                return Response(status_code=202, headers={"Location": str(request.url)})
            if op.status == "Failed":
                error = op.error or {"code": "OperationFailed", "message": "The operation failed."}
                raise arm_fail(400, str(error.get("code")), str(error.get("message")))
            return Response(status_code=204) if op.result is None else JSONResponse(op.result)
        return JSONResponse(op.as_status())

    def routes(self) -> list[BaseRoute]:
        return [ci_route("/subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{op}",
                         self.status, ["GET"])]


def routes(twin: Twin) -> list[BaseRoute]:
    return twin.operations.routes()
