"""``LocalHost``: a blocking test harness around a host running on a background event loop.

All hosts in a process share one long-lived loop thread, so the SDK's module-global aiohttp
session (bound to the first loop that used it) keeps working across hosts and tests.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import http.client
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlencode, urlsplit

from azure.durable_functions import DurableOrchestrationClient
from azure.durable_functions.models.utils import http_utils
from azure.durable_functions.models.utils.df_serialization import df_dumps
from multidict import CIMultiDict

from localdev.clock import Clock, VirtualClock
from localdev.host.engine import ActivityCall, Engine
from localdev.host.episode import Schema, compact, parse_jtoken
from localdev.host.history import Event
from localdev.host.logs import LogCapture, LogEntry, scoped
from localdev.host.registry import Registry, build_registry, load_app
from localdev.host.replay import ReplayReport, replay_history
from localdev.host.runtime import HostRuntime, options_from_host_json
from localdev.host.store import TERMINAL, InstanceRow, Query
from localdev.host.timefmt import seconds_from_ticks
from localdev.host.webhooks import VALIDATION_EVENT

T = TypeVar("T")
EventEncoding = Literal["python-client", "value"]


class HostIdleError(RuntimeError):
    """Everything is idle (virtual clock: no work, no timers) but the awaited condition never came true."""


class _SharedLoop:
    """One daemon thread running one event loop for every host of the process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=run, name="localdev-host-loop", daemon=True).start()
                ready.wait()
                cls._loop = loop
                atexit.register(cls._close_sdk_session, loop)
            return cls._loop

    @staticmethod
    def _close_sdk_session(loop: asyncio.AbstractEventLoop) -> None:
        """Close the SDK client's global aiohttp session at exit (it never closes it itself)."""
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(http_utils._close_session(), loop).result(5)


class _RootLevel:
    """Lower the root logger so INFO records of user functions get captured; restore after the last host."""

    _lock = threading.Lock()
    _users = 0
    _saved = logging.NOTSET

    @classmethod
    def lower(cls, level: int) -> None:
        with cls._lock:
            root = logging.getLogger()
            if cls._users == 0:
                cls._saved = root.level
            cls._users += 1
            if root.level == logging.NOTSET or root.level > level:
                root.setLevel(level)

    @classmethod
    def restore(cls) -> None:
        with cls._lock:
            cls._users = max(0, cls._users - 1)
            if cls._users == 0:
                logging.getLogger().setLevel(cls._saved)


@dataclass(frozen=True)
class InstanceStatus:
    """An instance as the status API reports it (input/output/custom status decoded)."""

    instance_id: str
    name: str
    runtime_status: str
    input: Any
    output: Any
    custom_status: Any
    created_time: datetime
    last_updated_time: datetime
    failure_details: str | None = None

    @property
    def done(self) -> bool:
        return self.runtime_status in TERMINAL

    @classmethod
    def of(cls, row: InstanceRow) -> InstanceStatus:
        return cls(
            instance_id=row.instance_id,
            name=row.name,
            runtime_status=row.status,
            input=parse_jtoken(row.input),
            output=parse_jtoken(row.output),
            custom_status=parse_jtoken(row.custom_status),
            created_time=datetime.fromtimestamp(seconds_from_ticks(row.created_ticks), tz=UTC),
            last_updated_time=datetime.fromtimestamp(seconds_from_ticks(row.updated_ticks), tz=UTC),
            failure_details=row.failure_details,
        )


@dataclass
class HttpResult:
    status: int
    headers: CIMultiDict[str] = field(default_factory=CIMultiDict)  # case-insensitive, like HTTP
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class LocalHost:
    """A local Durable host for tests: ``with LocalHost("function_app:app") as host: ...``.

    ``app`` is a FunctionApp or ``"module:attr"`` (imported after ``settings`` are applied).
    The default clock is a fresh ``VirtualClock``; pass one to share it with the Azure twin.
    ``db_path`` defaults to an in-memory SQLite database; give a file to test restarts.
    """

    def __init__(
        self,
        app: Any = "function_app:app",
        *,
        clock: Clock | None = None,
        db_path: str | Path | None = None,
        settings: Mapping[str, str] | None = None,
        host_json: dict[str, Any] | str | Path | None = None,
        port: int = 0,
        function_key: str | None = None,
        schema: Schema = "v3",
        timer_triggers: bool = False,
        task_hub: str | None = None,
        log_level: int = logging.INFO,
    ) -> None:
        self._app_spec = app
        self.clock: Clock = clock or VirtualClock()
        self._settings = dict(settings or {})
        self._host_json = host_json
        self._overrides: dict[str, Any] = {
            "db_path": str(db_path) if db_path is not None else ":memory:",
            "port": port,
            "function_key": function_key,
            "schema": schema,
            "timer_triggers": timer_triggers,
        }
        if task_hub:
            self._overrides["task_hub"] = task_hub
        self._log_level = log_level
        self._saved_env: dict[str, str | None] = {}
        self._lowered_root = False
        self._runtime: HostRuntime | None = None
        self._registry: Registry | None = None
        self._capture: LogCapture | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._runtime is not None:
            raise RuntimeError("this LocalHost is already started")
        self._apply_settings()
        try:
            app = load_app(self._app_spec) if isinstance(self._app_spec, str) else self._app_spec
            options = options_from_host_json(self._host_json, **self._overrides)
            self._runtime = HostRuntime(app, self.clock, options)
            self._registry = self._runtime.registry
            self._capture = LogCapture(self._runtime.host_id)
            logging.getLogger().addHandler(self._capture)
            _RootLevel.lower(self._log_level)
            self._lowered_root = True
            self._loop = _SharedLoop.get()
            self._run(self._start_runtime(), timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    async def _start_runtime(self) -> None:
        session = http_utils._client_session  # the SDK's global session: drop it if another loop owns it
        if session is not None and (session.closed or getattr(session, "_loop", None) is not self._loop):
            http_utils._client_session = None
            http_utils._session_lock = asyncio.Lock()
        assert self._runtime is not None
        await self._runtime.start()

    def stop(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is not None and self._loop is not None:
            try:
                self._run(runtime.stop(), timeout=30)
            finally:
                self._detach_logging()
                self._restore_settings()
            return
        self._detach_logging()
        self._restore_settings()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def _apply_settings(self) -> None:
        for key, value in self._settings.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value

    def _restore_settings(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()

    def _detach_logging(self) -> None:
        if self._capture is not None:
            logging.getLogger().removeHandler(self._capture)
        if self._lowered_root:
            _RootLevel.restore()
            self._lowered_root = False

    # --- plumbing -------------------------------------------------------------------------------------
    @property
    def runtime(self) -> HostRuntime:
        if self._runtime is None:
            raise RuntimeError("the LocalHost is not started (use start() or a with-block)")
        return self._runtime

    @property
    def engine(self) -> Engine:
        assert self.runtime.engine is not None
        return self.runtime.engine

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = build_registry(
                load_app(self._app_spec) if isinstance(self._app_spec, str) else self._app_spec
            )
        return self._registry

    @property
    def base_url(self) -> str:
        assert self.runtime.urls is not None
        return self.runtime.urls.base_url

    @property
    def rpc_base_url(self) -> str:
        assert self.runtime.urls is not None
        return self.runtime.urls.rpc_base

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _on_loop(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the host loop; inline when already there (e.g. in a wait predicate)."""
        try:
            inline = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            inline = False
        if inline:
            with scoped(self.engine.scope):
                return function()

        async def call() -> T:
            with scoped(self.engine.scope):
                return function()

        return self._run(call())

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Run any coroutine on the host's loop (e.g. your own use of the real client) and wait."""
        return self._run(coroutine, timeout)

    # --- orchestrations -------------------------------------------------------------------------------
    def start_new(
        self, name: str, input: Any = None, instance_id: str | None = None, *, version: str | None = None
    ) -> str:
        """Start like ``DurableOrchestrationClient.start_new`` does (same input encoding)."""
        body = None if input is None else json.dumps(df_dumps(input))
        return self._on_loop(lambda: self.engine.start_instance(name, body, instance_id, version))

    def raise_event(
        self, instance_id: str, name: str, data: Any = None, *, encoding: EventEncoding = "python-client"
    ) -> None:
        """Raise an event. ``python-client`` (default) encodes like the real Python client, so the
        orchestrator receives JSON *text* (azure-functions-durable-python#295); ``value`` delivers
        the value itself, as a .NET client would."""
        text = compact(json.dumps(data)) if encoding == "python-client" else compact(data)
        outcome = self._on_loop(lambda: self.engine.raise_event(instance_id, name, text))
        if outcome == "not_found":
            raise LookupError(f"No instance with ID {instance_id} found.")
        if outcome == "gone":
            raise RuntimeError(f"Instance with ID {instance_id} is gone: either completed or failed")

    def terminate(self, instance_id: str, reason: str = "") -> None:
        outcome = self._on_loop(lambda: self.engine.terminate(instance_id, reason))
        if outcome != "accepted":
            raise LookupError(f"cannot terminate {instance_id}: {outcome}")

    def suspend(self, instance_id: str) -> None:
        self._on_loop(lambda: self.engine.suspend(instance_id))

    def resume(self, instance_id: str) -> None:
        self._on_loop(lambda: self.engine.resume(instance_id))

    def get_status(self, instance_id: str) -> InstanceStatus | None:
        row = self._on_loop(lambda: self.engine.store.get(instance_id))
        return None if row is None else InstanceStatus.of(row)

    def instances(self, prefix: str | None = None) -> list[InstanceStatus]:
        rows = self._on_loop(lambda: self.engine.store.query(Query(prefix=prefix)))
        return [InstanceStatus.of(row) for row in rows]

    def history(self, instance_id: str) -> list[Event]:
        """The current execution's DTFx-shaped history (what the SDK is replayed against)."""
        return self._on_loop(lambda: self.engine.store.history(instance_id))

    def replay(self, events: list[Event], orchestrator_name: str | None = None) -> ReplayReport:
        """Replay a recorded history against the current code (no host needs to be running)."""
        return replay_history(self.registry, events, orchestrator_name)

    def check_replay(self, instance_id: str) -> ReplayReport:
        """Replay the instance's stored history and raise ``ReplayMismatchError`` unless it still fits."""
        return self.replay(self.history(instance_id)).raise_for_problems()

    # --- waiting ---------------------------------------------------------------------------------------
    def run_until_idle(self, timeout: float = 30.0, until: Callable[[], bool] | None = None) -> None:
        """Block until nothing is runnable (and, on a virtual clock, no timer is pending), or ``until()``."""
        self._wait(until, timeout, "the host to become idle", fail_when_idle=False)

    def wait_for(self, instance_id: str, timeout: float = 30.0, *, fail_if_idle: bool = True) -> InstanceStatus:
        """Block until the instance is Completed/Failed/Terminated; on a virtual clock, fail fast
        (``HostIdleError``) when everything went idle first, e.g. it waits for an event."""

        def finished() -> bool:
            row = self.engine.store.get(instance_id)
            return row is not None and row.terminal

        self._wait(finished, timeout, f"instance {instance_id} to finish", fail_when_idle=fail_if_idle)
        status = self.get_status(instance_id)
        assert status is not None
        return status

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        """Block until ``predicate()`` holds (it runs on the host's loop, between work items)."""
        self._wait(predicate, timeout, "the condition", fail_when_idle=False)

    def _wait(self, predicate: Callable[[], bool] | None, timeout: float, what: str, *, fail_when_idle: bool) -> None:
        async def wait() -> None:
            deadline = time.monotonic() + timeout
            idle_since: float | None = None
            settle = max(0.1, 5 * float(getattr(self.clock, "_quiescence", 0.02)))  # outlast clock hand-offs
            while True:
                with scoped(self.engine.scope):
                    if predicate is not None and predicate():
                        return
                    # run_until_idle: nothing runnable; a wait that can fail fast: nothing can happen any more
                    idle = self._globally_idle() if predicate is None else self._stuck()
                if idle:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since >= settle:
                        if predicate is None:
                            return
                        if fail_when_idle:
                            raise HostIdleError(f"gave up waiting for {what}: the host is idle ({self._pending()})")
                else:
                    idle_since = None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what} ({self._pending()})")
                await self.engine.changed(0.01)

        self._run(wait(), timeout=None)

    def _globally_idle(self) -> bool:
        if isinstance(self.clock, VirtualClock):
            return (
                self.engine.is_idle(include_timers=True)
                and self.clock.busy_count == 0
                and self.clock.pending_timers() == 0
            )
        return self.engine.is_idle(include_timers=False)

    def _stuck(self) -> bool:
        """No work and no timer left that could ever change anything (durable timers count on any clock)."""
        return self._globally_idle() and self.engine.is_idle(include_timers=True)

    def _pending(self) -> str:
        pending = self.engine.pending()
        if isinstance(self.clock, VirtualClock):
            pending["clock_busy"] = self.clock.busy_count
            pending["clock_timers"] = self.clock.pending_timers()
        return ", ".join(f"{k}={v}" for k, v in pending.items())

    @contextlib.contextmanager
    def hold_clock(self) -> Iterator[None]:
        """Keep a virtual clock from jumping while the test scripts several steps "at one instant"
        (it jumps to the next timer whenever the host is idle, e.g. between two test statements)."""
        with self.clock.busy():
            yield

    def advance_clock(self, seconds: float) -> None:
        if not isinstance(self.clock, VirtualClock):
            raise TypeError(f"only a virtual clock can be advanced by hand, not a {self.clock.kind} clock")
        self.clock.advance(seconds)

    # --- activities and logs ----------------------------------------------------------------------------
    def mock_activity(self, name: str, fn: Callable[[Any], Any] | None) -> None:
        """Replace an activity's body by ``fn(decoded_input)`` (sync or async); ``None`` restores it.
        Results and exceptions still travel through the real converters and failure format."""
        info = self.registry.activity(name)
        if info is None:
            raise LookupError(f"the app has no activity named {name!r}")
        if fn is None:
            self.engine.activity_overrides.pop(info.name, None)
        else:
            self.engine.activity_overrides[info.name] = fn

    def activity_calls(self, name: str | None = None) -> list[ActivityCall]:
        return [c for c in self.engine.activity_calls if name is None or c.name == name]

    def logs(self, *, level: str | None = None, function: str | None = None) -> list[LogEntry]:
        entries = self._capture.entries() if self._capture else []
        return [
            e for e in entries if (level is None or e.level == level) and (function is None or e.function == function)
        ]

    def log_text(self) -> str:
        return "\n".join(str(e) for e in self.logs())

    # --- HTTP, Event Grid, timers, the real client --------------------------------------------------------
    def invoke_http(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> HttpResult:
        """A real HTTP request to this host. ``body``: bytes/str as-is, anything else as JSON."""
        send_headers = dict(headers or {})
        payload: bytes | None
        if body is None or isinstance(body, bytes):
            payload = body
        elif isinstance(body, str):
            payload = body.encode()
        else:
            payload = json.dumps(body).encode()
            send_headers.setdefault("Content-Type", "application/json")
        url = path if path.startswith("/") else f"/{path}"
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query)
        return _http(self.base_url, method, url, payload, send_headers)

    def deliver_event_grid(
        self,
        function_name: str,
        events: Iterable[Mapping[str, Any]] | Mapping[str, Any],
        *,
        event_type: str = "Notification",
    ) -> HttpResult:
        """POST events to ``/runtime/webhooks/eventgrid?functionName=...`` like Event Grid does.
        Event Grid schema or CloudEvents (events carrying ``specversion``) both work."""
        batch = [events] if isinstance(events, Mapping) else list(events)
        cloud = bool(batch) and all("specversion" in e for e in batch)
        headers = {
            "aeg-event-type": event_type,
            "Content-Type": "application/cloudevents-batch+json" if cloud else "application/json",
        }
        return self.invoke_http(
            "POST", "/runtime/webhooks/eventgrid", batch, headers=headers, query={"functionName": function_name}
        )

    def validate_event_grid(self, function_name: str, code: str | None = None) -> HttpResult:
        """The Event Grid SubscriptionValidation handshake against this host."""
        event = {
            "id": str(uuid.uuid4()),
            "topic": "/subscriptions/local",
            "subject": "",
            "eventType": VALIDATION_EVENT,
            "eventTime": datetime.now(UTC).isoformat(),
            "data": {"validationCode": code or str(uuid.uuid4()), "validationUrl": None},
            "dataVersion": "1",
        }
        return self.deliver_event_grid(function_name, [event], event_type="SubscriptionValidation")

    def trigger_timer(self, function_name: str) -> HttpResult:
        """Run a timer-triggered function now through the admin route (``POST /admin/functions/{name}``)."""
        return self.invoke_http("POST", f"/admin/functions/{function_name}", {"input": ""})

    def client(self, task_hub: str | None = None) -> DurableOrchestrationClient:
        """The real SDK client bound to this host. Await its methods on the host loop: ``host.call(...)``."""
        assert self.runtime.urls is not None
        return DurableOrchestrationClient(self.runtime.urls.client_binding(task_hub))

    def run_client(self, use: Callable[[DurableOrchestrationClient], Awaitable[T]], timeout: float = 60) -> T:
        """``host.run_client(lambda c: c.get_status(iid))`` - runs on the host loop, returns the result."""
        client = self.client()

        async def run() -> T:
            return await use(client)

        return self._run(run(), timeout)


def _http(base_url: str, method: str, url: str, body: bytes | None, headers: Mapping[str, str]) -> HttpResult:
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    try:
        connection.request(method, url, body=body, headers=dict(headers))
        response = connection.getresponse()
        return HttpResult(response.status, CIMultiDict(response.getheaders()), response.read())
    finally:
        connection.close()
