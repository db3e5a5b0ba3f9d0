"""Assembles store, registry, engine, timer triggers and the HTTP server on one event loop."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localdev.clock import Clock
from localdev.host.engine import Engine, EngineConfig
from localdev.host.episode import ExtensionSettings, Schema
from localdev.host.invoke import Invoker
from localdev.host.registry import Registry, build_registry
from localdev.host.server import HostServer, ServerConfig
from localdev.host.store import Store
from localdev.host.triggers import TimerTriggers
from localdev.host.urls import HostUrls

DEFAULT_TASK_HUB = "TestHubName"


@dataclass(frozen=True)
class HostOptions:
    """Everything configurable about a host (``host.json`` fills the Functions-side defaults)."""

    db_path: str = ":memory:"
    host: str = "127.0.0.1"
    port: int = 0
    task_hub: str = DEFAULT_TASK_HUB
    route_prefix: str = "api"
    function_key: str | None = None
    schema: Schema = "v3"
    timer_triggers: bool = True
    default_version: str = ""
    overwrite_running: bool = True
    max_concurrent_activities: int = field(default_factory=lambda: 10 * (os.cpu_count() or 1))
    function_directory: str = field(default_factory=os.getcwd)


def options_from_host_json(host_json: dict[str, Any] | str | Path | None, **overrides: Any) -> HostOptions:
    """Read the settings this host honours from ``host.json`` (``%SETTING%`` hub names resolve from env)."""
    data: dict[str, Any] = {}
    if isinstance(host_json, (str, Path)):
        data = json.loads(Path(host_json).read_text(encoding="utf-8"))
    elif isinstance(host_json, dict):
        data = host_json
    extensions = data.get("extensions") or {}
    durable = extensions.get("durableTask") or {}
    http = extensions.get("http") or {}
    values: dict[str, Any] = {}
    hub = durable.get("hubName")
    if isinstance(hub, str) and hub:
        resolved = os.environ.get(hub[1:-1]) if hub.startswith("%") and hub.endswith("%") else hub
        if resolved:
            values["task_hub"] = resolved
    if "routePrefix" in http:
        values["route_prefix"] = str(http["routePrefix"])
    if "defaultVersion" in durable:
        values["default_version"] = str(durable["defaultVersion"] or "")
    if "maxConcurrentActivityFunctions" in durable:
        values["max_concurrent_activities"] = int(durable["maxConcurrentActivityFunctions"])
    states = str(durable.get("overridableExistingInstanceStates", "AnyState")).lower()
    values["overwrite_running"] = states != "nonrunningstates"
    values.update(overrides)
    return HostOptions(**values)


class HostRuntime:
    """One running host: call ``start`` and ``stop`` on the event loop that will serve it."""

    def __init__(self, app: Any, clock: Clock, options: HostOptions, host_id: str | None = None) -> None:
        self.app = app
        self.clock = clock
        self.options = options
        self.host_id = host_id or uuid.uuid4().hex[:12]
        self.registry: Registry = build_registry(app)
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.server: HostServer | None = None
        self.triggers: TimerTriggers | None = None
        self.urls: HostUrls | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> HostUrls:
        options = self.options
        self.store = Store(options.db_path)
        self._executor = ThreadPoolExecutor(
            max_workers=max(4, options.max_concurrent_activities + 4), thread_name_prefix=f"host-{self.host_id}"
        )
        invoker = Invoker(self._executor, options.function_directory, self.host_id)
        config = EngineConfig(
            task_hub=options.task_hub,
            default_version=options.default_version,
            extension=ExtensionSettings(schema=options.schema),
            overwrite_running=options.overwrite_running,
            max_concurrent_activities=options.max_concurrent_activities,
        )
        self.engine = Engine(
            registry=self.registry,
            store=self.store,
            clock=self.clock,
            invoker=invoker,
            config=config,
            host_id=self.host_id,
        )
        self.triggers = TimerTriggers(self.engine, invoker, on_schedule=options.timer_triggers)
        self.server = HostServer(
            self.engine,
            invoker,
            self.triggers,
            ServerConfig(options.host, options.port, options.route_prefix, options.function_key),
        )
        invoker.client_binding = self.server.client_binding
        self.urls = await self.server.start()
        await self.engine.open()
        self.triggers.start()
        return self.urls

    async def stop(self) -> None:
        if self.triggers is not None:
            await self.triggers.stop()
        if self.server is not None:
            await self.server.stop()
        if self.engine is not None:
            await self.engine.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            self.store.close()
        await asyncio.sleep(0)
