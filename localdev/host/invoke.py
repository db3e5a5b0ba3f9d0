"""Calling user functions the way the Python worker does: real converters, keyword bindings, sync
functions in a thread pool, async ones on the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions import _abc, meta

from localdev.host.failures import activity_failure
from localdev.host.logs import HOST_LOGGER, Scope, current_scope, scoped
from localdev.host.registry import FunctionInfo

log = logging.getLogger(HOST_LOGGER)


class _TraceContext(_abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(_abc.RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class InvocationContext(func.Context):
    """The ``context`` argument the worker passes to functions that declare one."""

    def __init__(self, function_name: str, function_directory: str, invocation_id: str) -> None:
        self._function_name = function_name
        self._function_directory = function_directory
        self._invocation_id = invocation_id
        self._trace = _TraceContext()
        self._retry = _RetryContext()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return None

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> _abc.TraceContext:
        return self._trace

    @property
    def retry_context(self) -> _abc.RetryContext:
        return self._retry


def converter(binding_type: str) -> Any:
    found = meta.get_binding_registry().get(binding_type)  # type: ignore[no-untyped-call]
    if found is None:
        raise LookupError(f"azure-functions has no converter for binding type {binding_type!r}")
    return found


@dataclass
class HttpReply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass(frozen=True)
class HttpCall:
    method: str
    url: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    route_params: Mapping[str, str]
    body: bytes


@dataclass
class ActivityResult:
    ok: bool
    result: str | None = None
    reason: str = ""
    details: str | None = None


class Invoker:
    """Binds arguments, runs the function (thread pool or loop), encodes the result."""

    def __init__(self, executor: Executor, function_directory: str, host_id: str) -> None:
        self._executor = executor
        self._directory = function_directory
        self._host_id = host_id
        self.client_binding: Callable[[FunctionInfo], str] = _no_client_binding

    async def call(
        self,
        info: FunctionInfo,
        trigger_value: Any,
        *,
        instance_id: str | None = None,
        override: Callable[..., Any] | None = None,
    ) -> Any:
        invocation_id = str(uuid.uuid4())
        base = current_scope() or Scope(self._host_id)
        with scoped(base, function=info.name, invocation_id=invocation_id, instance_id=instance_id):
            unsupported = info.unsupported_bindings
            if unsupported:
                raise NotImplementedError(
                    f"function {info.name!r} uses bindings the local host does not provide: {', '.join(unsupported)}"
                )
            kwargs: dict[str, Any] = {info.trigger_param: trigger_value}
            if info.client_param:
                kwargs[info.client_param] = self.client_binding(info)
            if info.wants_context:
                kwargs["context"] = InvocationContext(info.name, self._directory, invocation_id)
            target: Callable[..., Any] = info.user_function
            bound = functools.partial(target, **kwargs)
            if override is not None:  # a test double gets the decoded trigger value only
                target, bound = override, functools.partial(override, trigger_value)
            log.info("Executing 'Functions.%s' (Id=%s)", info.name, invocation_id)
            try:
                if asyncio.iscoroutinefunction(target):
                    result = await bound()
                else:
                    loop = asyncio.get_running_loop()
                    result = await loop.run_in_executor(self._executor, contextvars.copy_context().run, bound)
            except Exception:
                log.exception("Executed 'Functions.%s' (Failed, Id=%s)", info.name, invocation_id)
                raise
            log.info("Executed 'Functions.%s' (Succeeded, Id=%s)", info.name, invocation_id)
            return result

    async def activity(
        self, info: FunctionInfo, input_text: str | None, *, instance_id: str, override: Callable[..., Any] | None
    ) -> ActivityResult:
        conv = converter(info.trigger_type)
        try:
            value = conv.decode(meta.Datum(input_text, "json"), trigger_metadata=None)
            returned = await self.call(info, value, instance_id=instance_id, override=override)
            encoded = conv.encode(returned, expected_type=None)
        except Exception as exc:
            reason, details = activity_failure(info.name, exc)
            return ActivityResult(False, reason=reason, details=details)
        return ActivityResult(True, result=encoded.value)

    async def http(self, info: FunctionInfo, request: HttpCall) -> HttpReply:
        datum = meta.Datum(
            type="http",
            value={
                "method": meta.Datum(request.method, "string"),
                "url": meta.Datum(request.url, "string"),
                "headers": {k: meta.Datum(v, "string") for k, v in request.headers.items()},
                "query": {k: meta.Datum(v, "string") for k, v in request.query.items()},
                "params": {k: meta.Datum(v, "string") for k, v in request.route_params.items()},
                "body": meta.Datum(request.body, "bytes"),
            },
        )
        http_request = converter(info.trigger_type).decode(datum, trigger_metadata={})
        try:
            returned = await self.call(info, http_request)
        except Exception:
            return HttpReply(500)
        return encode_http_response(info, returned)

    async def event(self, info: FunctionInfo, payload: Mapping[str, Any]) -> None:
        value = converter(info.trigger_type).decode(meta.Datum(json.dumps(payload), "json"), trigger_metadata=None)
        await self.call(info, value)

    async def timer(self, info: FunctionInfo, status: Mapping[str, Any]) -> None:
        value = converter(info.trigger_type).decode(meta.Datum(json.dumps(status), "json"), trigger_metadata=None)
        await self.call(info, value)


def _no_client_binding(info: FunctionInfo) -> str:
    raise RuntimeError(f"function {info.name!r} needs a durable client, but the host's HTTP server is not running")


def encode_http_response(info: FunctionInfo, returned: Any) -> HttpReply:
    """The ``$return`` http binding: HttpResponse through the real converter, str as text, None as 204."""
    if returned is None:
        return HttpReply(204)
    try:
        datum = converter("http").encode(returned, expected_type=None)
    except NotImplementedError:
        log.error("function %r returned %s, which an HTTP output cannot carry", info.name, type(returned).__name__)
        return HttpReply(500)
    if datum.type == "string":
        return HttpReply(200, [("Content-Type", "text/plain; charset=utf-8")], str(datum.value).encode())
    value = datum.value
    headers = [(name, str(h.value)) for name, h in value["headers"].items()]
    for cookie in value.get("cookies") or []:
        headers.extend(("Set-Cookie", morsel.OutputString()) for morsel in cookie.values())
    body = value["body"].value
    return HttpReply(int(value["status_code"].value), headers, body if isinstance(body, bytes) else str(body).encode())
