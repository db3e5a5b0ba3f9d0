"""function_app registers exactly the functions the blueprints declare.

The expected set is computed from every Blueprint object found in the modules of ``triggers/``,
``orchestrators/`` and ``activities/`` (not from the packages' BLUEPRINTS lists alone), so a
blueprint that is defined but never registered, or a package function_app stops registering,
fails the test.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import uuid
from collections import Counter
from pathlib import Path
from types import ModuleType

import azure.durable_functions as df
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("triggers", "orchestrators", "activities")


def _fresh_app() -> df.DFApp:
    """Execute function_app.py as a new module: get_functions() may only be called once per app object."""
    spec = importlib.util.spec_from_file_location(f"function_app_{uuid.uuid4().hex}", REPO / "function_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def _modules(package_name: str) -> list[ModuleType]:
    package = importlib.import_module(package_name)
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
        found.append(importlib.import_module(info.name))
    return found


def _declared_blueprints() -> dict[int, tuple[str, df.Blueprint]]:
    blueprints: dict[int, tuple[str, df.Blueprint]] = {}
    for package in PACKAGES:
        for module in _modules(package):
            for attribute, value in vars(module).items():
                if isinstance(value, df.Blueprint):
                    blueprints[id(value)] = (f"{module.__name__}.{attribute}", value)
    return blueprints


def _function_names(blueprint: df.Blueprint) -> list[str]:
    return [builder.build(None).get_function_name() for builder in blueprint._function_builders]


def test_every_declared_blueprint_is_listed_for_registration() -> None:
    listed = {id(bp) for package in PACKAGES for bp in importlib.import_module(package).BLUEPRINTS}
    unlisted = [name for key, (name, _) in _declared_blueprints().items() if key not in listed]
    assert unlisted == [], f"blueprints defined but not added to their package's BLUEPRINTS: {unlisted}"


def test_app_registers_exactly_the_declared_functions() -> None:
    expected = Counter(name for _, bp in _declared_blueprints().values() for name in _function_names(bp))
    registered = Counter(function.get_function_name() for function in _fresh_app().get_functions())
    assert registered == expected
    assert all(count == 1 for count in registered.values())


def test_the_check_notices_an_unregistered_function(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard the guard: a blueprint that only exists in a module (not in BLUEPRINTS) changes the expectation."""
    import triggers

    stray = df.Blueprint()

    @stray.route(route="stray-probe")
    def stray_probe(req: object) -> None:  # pragma: no cover - never invoked
        return None

    monkeypatch.setattr(triggers, "STRAY_BLUEPRINT", stray, raising=False)
    declared = Counter(name for _, bp in _declared_blueprints().values() for name in _function_names(bp))
    registered = Counter(function.get_function_name() for function in _fresh_app().get_functions())
    assert declared["stray_probe"] == 1 and registered["stray_probe"] == 0
    assert declared != registered
