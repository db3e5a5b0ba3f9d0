"""Shared set-up of the Services contract tests: a started twin and the app's settings pointed at it.

The app side is exactly what production runs - ``load_settings`` over an environment, the
``ClientFactory`` with ``DefaultAzureCredential`` reaching the twin's managed-identity endpoint via
IDENTITY_ENDPOINT/IDENTITY_HEADER, the twin's CA bundle - so only settings differ from Azure.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from azure.core.credentials import AccessToken
from azure.keyvault.keys import KeyClient, KeyReleasePolicy, KeyVaultKey
from azure.keyvault.keys._shared import http_challenge_cache

from localdev.twin.core import Twin, TwinConfig
from skr import clients
from skr.clients import ClientConfig, ClientFactory
from skr.policy import ClaimCondition, build_policy, policy_json_bytes
from skr.settings import Settings, load_settings


def app_env(twin: Twin, **overrides: str | None) -> dict[str, str]:
    """The app settings (plus the identity endpoint) that point production code at ``twin``."""
    vault = twin.vault()
    env = {
        "SKR_VAULT_URL": vault.url,
        "SKR_VAULT_RESOURCE_ID": vault.resource_id,
        "SKR_MAA_ENDPOINT": twin.urls.maa,
        "SKR_SCOPES": f"/subscriptions/{twin.config.subscription_id}",
        "SKR_ARM_ENDPOINT": twin.urls.arm,
        "SKR_CA_BUNDLE": twin.ca_bundle_path,
        "SKR_SDK_RETRY_TOTAL": "0",
        "SKR_EVENTS_TOPIC_ENDPOINT": twin.urls.events,
        "IDENTITY_ENDPOINT": twin.urls.identity,
        "IDENTITY_HEADER": twin.identity_header,
    }
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def app_settings(twin: Twin, **overrides: str | None) -> Settings:
    return load_settings(app_env(twin, **overrides))


@contextmanager
def identity_env(twin: Twin) -> Iterator[None]:
    """IDENTITY_* for DefaultAzureCredential (it reads os.environ); restored afterwards."""
    with patched_environ({"IDENTITY_ENDPOINT": twin.urls.identity, "IDENTITY_HEADER": twin.identity_header}):
        yield


@contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def factory_for(settings: Settings) -> ClientFactory:
    """A fresh factory (own clients, own credential) over ``settings``."""
    return ClientFactory(ClientConfig.from_settings(settings))


@contextmanager
def started_twin(**config: Any) -> Iterator[Twin]:
    """A twin on free loopback ports with instant RBAC propagation unless told otherwise."""
    config.setdefault("propagation", "fixed:0")
    twin = Twin(TwinConfig(**config))
    twin.start()
    try:
        with identity_env(twin):
            yield twin
    finally:
        twin.stop()
        http_challenge_cache.clear()


@contextmanager
def activity_env(twin: Twin, **overrides: str | None) -> Iterator[None]:
    """The process environment activities read (they load settings themselves), caches reset around it."""
    env: dict[str, str | None] = dict(app_env(twin, **overrides))
    for name in overrides:
        env.setdefault(name, None)
    clients.reset()
    try:
        with patched_environ(env):
            yield
    finally:
        clients.reset()


class PrincipalCredential:
    """A token credential for any twin principal (tests arrange state as the operator, or as a VM)."""

    def __init__(self, twin: Twin, principal_id: str) -> None:
        self._twin = twin
        self._principal_id = principal_id

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        audience = scopes[0].removesuffix("/.default")
        token = self._twin.identity.mint_token(self._principal_id, audience)
        return AccessToken(token, int(time.time()) + 3600)


def operator_keys(twin: Twin) -> KeyClient:
    """A KeyClient acting as the twin's operator (Key Vault Administrator on the subscription)."""
    return KeyClient(
        twin.vault().url,
        PrincipalCredential(twin, twin.operator_principal.object_id),  # type: ignore[arg-type]
        verify_challenge_resource=False,
        connection_verify=twin.ca_bundle_path,
    )


def exportable_key(twin: Twin, name: str, policy: bytes) -> KeyVaultKey:
    """An exportable RSA-HSM key with ``policy``, made by the operator (state the app finds, not makes)."""
    return operator_keys(twin).create_rsa_key(
        name, size=2048, hardware_protected=True, exportable=True, release_policy=KeyReleasePolicy(policy)
    )


def other_policy(twin: Twin) -> bytes:
    """A valid release policy for the twin's MAA that differs from the app's default one."""
    condition = ClaimCondition.of("x-ms-isolation-tee.x-ms-attestation-type", "equals", "tdxvm")
    return policy_json_bytes(build_policy(twin.urls.maa, [condition]))


_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A name no other test in this process uses (tests share one twin per module)."""
    return f"{prefix}-{os.getpid() % 10000}-{next(_names)}"


@functools.cache
def app_functions() -> dict[str, Any]:
    """``function_app.app``'s functions by name (``get_functions`` may run only once per app)."""
    import function_app

    return {function.get_function_name(): function for function in function_app.app.get_functions()}


def activity(name: str) -> Callable[[Any], Any]:
    """The user function the app registered under ``name`` (what the Functions host invokes)."""
    function = app_functions().get(name)
    if function is None:
        raise LookupError(f"function_app registers no function named {name!r}")
    user_function: Callable[[Any], Any] = function.get_user_function()
    return user_function


def call_activity(name: str, payload: Any) -> dict[str, Any]:
    """Invoke an activity with JSON in and out, as Durable does (a round trip through json)."""
    result = activity(name)(json.loads(json.dumps(payload)))
    decoded: dict[str, Any] = json.loads(json.dumps(result))
    return decoded
