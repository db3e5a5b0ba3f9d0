"""Index of a v2-model app: what ``app.get_functions()`` declares, grouped the way the host serves it."""

from __future__ import annotations

import importlib
import inspect
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

from localdev.host.ncrontab import Schedule, parse_schedule

_ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE")
_ORCHESTRATION = "orchestrationTrigger"
_ACTIVITY = "activityTrigger"
_ENTITY = "entityTrigger"
_CLIENT = "durableClient"


class AppLoadError(Exception):
    """The ``--app`` target cannot be imported or is not a function app."""


@dataclass(frozen=True)
class FunctionInfo:
    """One function: its trigger, the parameter names to bind and the callable the worker would call."""

    name: str
    kind: str
    trigger_type: str
    trigger_param: str
    trigger: dict[str, Any]
    user_function: Callable[..., Any]
    bindings: tuple[dict[str, Any], ...]
    client_param: str | None = None
    client_task_hub: str | None = None
    client_connection: str | None = None
    wants_context: bool = False
    is_async: bool = False

    @property
    def auth_level(self) -> str:
        return str(self.trigger.get("authLevel", "FUNCTION")).lower()

    @property
    def route(self) -> str:
        return str(self.trigger.get("route") or self.name)

    @property
    def methods(self) -> tuple[str, ...]:
        methods = self.trigger.get("methods")
        return tuple(str(m).upper() for m in methods) if methods else _ALL_METHODS

    @property
    def unsupported_bindings(self) -> list[str]:
        handled = {self.trigger_param, self.client_param, "$return"}
        return [f"{b['type']}:{b['name']}" for b in self.bindings if b["name"] not in handled]


@dataclass
class Registry:
    functions: dict[str, FunctionInfo] = field(default_factory=dict)
    orchestrators: dict[str, FunctionInfo] = field(default_factory=dict)
    activities: dict[str, FunctionInfo] = field(default_factory=dict)
    entities: dict[str, FunctionInfo] = field(default_factory=dict)
    http: list[FunctionInfo] = field(default_factory=list)
    event_grid: dict[str, FunctionInfo] = field(default_factory=dict)
    timers: dict[str, tuple[FunctionInfo, Schedule]] = field(default_factory=dict)

    def orchestrator(self, name: str) -> FunctionInfo | None:
        return _lookup(self.orchestrators, name)

    def activity(self, name: str) -> FunctionInfo | None:
        return _lookup(self.activities, name)

    def describe(self) -> list[dict[str, Any]]:
        rows = []
        for info in self.functions.values():
            row: dict[str, Any] = {"name": info.name, "kind": info.kind, "trigger": info.trigger_type}
            if info.kind == "http":
                row.update(route=info.route, methods=list(info.methods), authLevel=info.auth_level)
            if info.kind == "timer":
                row["schedule"] = info.trigger.get("schedule")
            rows.append(row)
        return rows


def _lookup(table: dict[str, FunctionInfo], name: str) -> FunctionInfo | None:
    found = table.get(name)
    if found is None:
        lowered = name.lower()
        found = next((info for key, info in table.items() if key.lower() == lowered), None)
    return found


def load_app(spec: str) -> func.FunctionApp:
    """Import ``module[:attr]`` (attr defaults to ``app``) like ``func start`` imports function_app."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise AppLoadError(f"--app {spec!r}: expected MODULE:ATTR, e.g. function_app:app")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppLoadError(f"cannot import app module {module_name!r}: {exc}") from exc
    app = getattr(module, attr or "app", None)
    if app is None or not hasattr(app, "get_functions"):
        raise AppLoadError(f"{module_name}:{attr or 'app'} is not a FunctionApp (no get_functions())")
    return app  # type: ignore[no-any-return]


def _binding_dicts(function: Any) -> tuple[dict[str, Any], ...]:
    out = []
    for binding in function.get_bindings():
        raw = binding.get_dict_repr()
        out.append({k: (v.value if hasattr(v, "value") else v) for k, v in raw.items()})
    return tuple(out)


def _kind(trigger_type: str) -> str:
    return {
        _ORCHESTRATION: "orchestrator",
        _ACTIVITY: "activity",
        _ENTITY: "entity",
        "httpTrigger": "http",
        "eventGridTrigger": "eventgrid",
        "timerTrigger": "timer",
    }.get(trigger_type, "other")


_INDEXED: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def indexed_functions(app: Any) -> list[Any]:
    """``app.get_functions()`` without spending the app's one call.

    azure-functions records every name it validated in ``app.functions_bindings`` and refuses a
    second ``get_functions()`` (duplicate names). The host indexes with that record cleared and
    puts it back afterwards, so its own indexing works whoever indexed before, and code that calls
    ``get_functions()`` itself later (tests do) still can. Cached per app object.
    """
    functions = _INDEXED.get(app)
    if functions is None:
        recorded = getattr(app, "functions_bindings", None)
        if hasattr(app, "functions_bindings"):
            app.functions_bindings = {}
        try:
            functions = list(app.get_functions())
        finally:
            if hasattr(app, "functions_bindings"):
                app.functions_bindings = recorded
        _INDEXED[app] = functions
    return functions


def build_registry(app: Any) -> Registry:
    registry = Registry()
    for function in indexed_functions(app):
        bindings = _binding_dicts(function)
        trigger = next((b for b in bindings if b["type"].lower().endswith("trigger")), None)
        if trigger is None:
            raise AppLoadError(f"function {function.get_function_name()!r} has no trigger binding")
        client = next((b for b in bindings if b["type"] == _CLIENT), None)
        user_function = function.get_user_function()
        signature = inspect.signature(user_function)
        binding_names = {b["name"] for b in bindings}
        info = FunctionInfo(
            name=function.get_function_name(),
            kind=_kind(trigger["type"]),
            trigger_type=trigger["type"],
            trigger_param=trigger["name"],
            trigger=trigger,
            user_function=user_function,
            bindings=bindings,
            client_param=client["name"] if client else None,
            client_task_hub=client.get("taskHub") if client else None,
            client_connection=client.get("connectionName") if client else None,
            wants_context="context" in signature.parameters and "context" not in binding_names,
            is_async=inspect.iscoroutinefunction(user_function),
        )
        if info.name in registry.functions:
            raise AppLoadError(f"two functions are named {info.name!r}")
        registry.functions[info.name] = info
        if info.kind == "orchestrator":
            _register(registry.orchestrators, info, trigger.get("orchestration"))
        elif info.kind == "activity":
            _register(registry.activities, info, trigger.get("activity"))
        elif info.kind == "entity":
            _register(registry.entities, info, trigger.get("entityName"))
        elif info.kind == "http":
            registry.http.append(info)
        elif info.kind == "eventgrid":
            registry.event_grid[info.name] = info
        elif info.kind == "timer":
            registry.timers[info.name] = (info, parse_schedule(_resolve_setting(str(trigger["schedule"]))))
    return registry


def _resolve_setting(value: str) -> str:
    """``%NAME%`` binding expressions read an app setting, as the Functions host does."""
    if len(value) > 2 and value.startswith("%") and value.endswith("%"):
        name = value[1:-1]
        if name not in os.environ:
            raise AppLoadError(f"binding expression {value!r} names app setting {name!r}, which is not set")
        return os.environ[name]
    return value


def _register(table: dict[str, FunctionInfo], info: FunctionInfo, alias: str | None) -> None:
    table[info.name] = info
    if alias and alias != info.name:
        table[alias] = info
