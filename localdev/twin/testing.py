"""Helpers for tests and scripts that drive the twin with the real Azure SDK clients."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo

from localdev.clock import Clock
from localdev.twin.core import Twin, TwinConfig, start_twin

ARM_SCOPE = "https://management.azure.com/.default"


class TwinCredential:
    """A TokenCredential whose tokens name ``principal_id`` (default: the app identity)."""

    def __init__(self, twin: Twin, principal_id: str | None = None) -> None:
        self.twin = twin
        self.principal_id = principal_id or twin.app_principal.object_id
        self.requests: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        info = self.get_token_info(*scopes)
        return AccessToken(info.token, info.expires_on)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.requests.append(scopes)
        resource = scopes[0].removesuffix("/.default")
        token = self.twin.identity.mint_token(self.principal_id, resource)
        return AccessTokenInfo(token, int(self.twin.clock.time() + self.twin.config.token_lifetime_seconds))

    def close(self) -> None:
        return None


def client_kwargs(twin: Twin, **overrides: Any) -> dict[str, Any]:
    """Transport settings that point an SDK client at the twin, with small retry/poll settings."""
    return {"connection_verify": twin.ca_bundle_path, "retry_total": 2, "retry_backoff_factor": 0.01,
            "retry_backoff_max": 0.05, **overrides}


def arm_kwargs(twin: Twin, **overrides: Any) -> dict[str, Any]:
    return client_kwargs(twin, base_url=twin.urls.arm, credential_scopes=[ARM_SCOPE], polling_interval=0.02,
                         **overrides)


def authorization_client(twin: Twin, principal_id: str | None = None, **overrides: Any) -> Any:
    from azure.mgmt.authorization import AuthorizationManagementClient

    return AuthorizationManagementClient(TwinCredential(twin, principal_id), twin.config.subscription_id,
                                         **arm_kwargs(twin, **overrides))


def compute_client(twin: Twin, principal_id: str | None = None, **overrides: Any) -> Any:
    from azure.mgmt.compute import ComputeManagementClient

    return ComputeManagementClient(TwinCredential(twin, principal_id), twin.config.subscription_id,
                                   **arm_kwargs(twin, **overrides))


def key_client(twin: Twin, principal_id: str | None = None, vault: str | None = None, **overrides: Any) -> Any:
    from azure.keyvault.keys import KeyClient

    clear_challenge_cache()
    return KeyClient(twin.vault(vault).url, TwinCredential(twin, principal_id), verify_challenge_resource=False,
                     **client_kwargs(twin, **overrides))


def publisher_client(twin: Twin, credential: Any) -> Any:
    """An EventGridPublisherClient for the twin's topic.

    azure-eventgrid 4.22 does not forward constructor kwargs to the basic-topic pipeline, so pass
    the CA per call: ``client.send(events, connection_verify=twin.ca_bundle_path)`` (or set
    REQUESTS_CA_BUNDLE, which the requests transport honours).
    """
    from azure.eventgrid import EventGridPublisherClient

    return EventGridPublisherClient(twin.urls.events, credential)


def clear_challenge_cache() -> None:
    """Key Vault challenges are cached per netloc, process-wide: forget them (ports get reused)."""
    from azure.keyvault.keys._shared import http_challenge_cache

    http_challenge_cache.clear()


def managed_identity_env(twin: Twin) -> dict[str, str]:
    """Environment for ``ManagedIdentityCredential`` to use the twin's App Service-style endpoint."""
    return {"IDENTITY_ENDPOINT": twin.urls.identity, "IDENTITY_HEADER": twin.identity_header}


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll ``predicate`` (real time) until it returns something truthy; AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


@contextmanager
def running_twin(config: TwinConfig | None = None, clock: Clock | None = None) -> Iterator[Twin]:
    """A started twin, stopped and cleaned up afterwards (Key Vault challenge cache included)."""
    try:
        with start_twin(config, clock) as twin:
            yield twin
    finally:
        clear_challenge_cache()


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Webhook:
    """A tiny local HTTP receiver for event delivery tests.

    ``statuses`` is consumed one per notification (default 200 afterwards); ``validation`` is
    ``"echo"`` (answer the code), ``"manual"`` (GET the validation URL instead), or ``"refuse"``.
    """

    statuses: list[int] = field(default_factory=list)
    validation: str = "echo"
    ca_bundle: str | None = None  # trusted for the manual validation GET (the twin's CA)
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/events"

    def notifications(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.headers.get("aeg-event-type") == "Notification"]

    def events(self) -> list[dict[str, Any]]:
        """Every delivered event (Event Grid schema arrays flattened, CloudEvents as they came)."""
        out: list[dict[str, Any]] = []
        for r in self.notifications():
            out.extend(r.body if isinstance(r.body, list) else [r.body])
        return out

    def start(self) -> Webhook:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _record(self) -> Received:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                item = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with hook._lock:
                    hook.received.append(item)
                return item

            def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_OPTIONS(self) -> None:  # CloudEvents abuse-protection handshake
                self._record()
                if hook.validation == "refuse":
                    self._reply(403)
                else:
                    self._reply(200, headers={"WebHook-Allowed-Origin": "eventgrid.azure.net"})

            def do_POST(self) -> None:
                item = self._record()
                if item.headers.get("aeg-event-type") == "SubscriptionValidation":
                    data = item.body[0]["data"]
                    if hook.validation == "echo":
                        self._reply(200, json.dumps({"validationResponse": data["validationCode"]}).encode())
                    elif hook.validation == "manual":
                        self._reply(200)
                        url = data["validationUrl"]
                        threading.Thread(target=_get, args=(url, hook.ca_bundle), daemon=True).start()
                    else:
                        self._reply(400)
                    return
                with hook._lock:
                    status = hook.statuses.pop(0) if hook.statuses else 200
                self._reply(status)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.02,), name="test-webhook", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _get(url: str, ca_bundle: str | None) -> None:
    """GET the validation URL like a webhook owner would, a moment after answering the POST."""
    import ssl
    import urllib.request

    context = ssl.create_default_context(cafile=ca_bundle)
    time.sleep(0.05)
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        response.read()


def tls_context(twin: Twin) -> Any:
    """An SSL context trusting only the twin's CA (for httpx/urllib clients)."""
    import ssl

    return ssl.create_default_context(cafile=twin.ca_bundle_path)


def admin_client(twin: Twin) -> Any:
    """An httpx client for the twin's admin API."""
    import httpx

    return httpx.Client(base_url=twin.urls.admin, verify=tls_context(twin))
