"""Response shapes shared by every twin service: ARM and Key Vault error bodies, JSON helpers."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class TwinHttpError(Exception):
    """Raised inside a handler to end the request with ``response`` (rendered by the server)."""

    def __init__(self, response: Response) -> None:
        super().__init__(getattr(response, "status_code", 500))
        self.response = response


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def arm_error_response(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                       details: list[dict[str, Any]] | None = None) -> JSONResponse:
    """ARM's ``{"error": {"code", "message"}}`` (common-types ErrorResponse)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def kv_error_response(status: int, code: str, message: str, inner: str | None = None, *,
                      headers: dict[str, str] | None = None) -> JSONResponse:
    """Key Vault's ``{"error": {"code", "message", "innererror"?: {"code"}}}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def arm_fail(status: int, code: str, message: str, **kwargs: Any) -> TwinHttpError:
    return TwinHttpError(arm_error_response(status, code, message, **kwargs))


def kv_fail(status: int, code: str, message: str, inner: str | None = None) -> TwinHttpError:
    return TwinHttpError(kv_error_response(status, code, message, inner))


def parse_json_body(raw: bytes, fail: Any) -> Any:
    """Decode a JSON request body; ``fail(message)`` builds the service-specific 400."""
    if not raw:
        raise fail("The request body is empty.")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(f"The request content was invalid and could not be deserialized: {exc}.") from exc


def ci_route(path: str, endpoint: Any, methods: list[str]) -> Route:
    """A Starlette route whose path matches case-insensitively (ARM and Key Vault paths do)."""
    route = Route(path, endpoint, methods=methods)
    route.path_regex = re.compile(route.path_regex.pattern, re.IGNORECASE)
    return route


def query_param(request: Request, name: str) -> str | None:
    """A query parameter by case-insensitive name (``$skipToken`` vs ``$skiptoken``)."""
    lowered = name.lower()
    for key, value in request.query_params.multi_items():
        if key.lower() == lowered:
            return value
    return None


async def read_json(request: Request, fail: Any) -> Any:
    return parse_json_body(await request.body(), fail)
