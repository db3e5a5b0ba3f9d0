"""One factory for every Azure SDK client: endpoints, credential, CA bundle, retries - chosen by settings only.

Production talks to Azure with ``DefaultAzureCredential`` (a user-assigned identity when
AZURE_CLIENT_ID is set); locally the same chain reaches the twin's managed-identity endpoint
through IDENTITY_ENDPOINT/IDENTITY_HEADER, and SKR_ARM_ENDPOINT/SKR_VAULT_URL/SKR_CA_BUNDLE point
the real clients at it. SDK retries stay short: a long wait (Retry-After, propagation) belongs in
a durable timer, where it costs nothing and survives restarts.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AzureKeyCredential, TokenCredential
from azure.core.messaging import CloudEvent
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.eventgrid import EventGridPublisherClient
from azure.identity import DefaultAzureCredential
from azure.keyvault.keys import KeyClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.compute import ComputeManagementClient

from skr.errors import retry_after_seconds
from skr.settings import Settings, load_settings

PUBLIC_ARM_ENDPOINT = "https://management.azure.com"
PUBLIC_ARM_SCOPE = "https://management.azure.com/.default"
# An SDK retry sleeps the whole Retry-After in-process; above this we hand the wait to the orchestrator.
MAX_IN_PROCESS_RETRY_AFTER_SECONDS = 2.0
RETRY_BACKOFF_FACTOR = 0.25
RETRY_BACKOFF_MAX_SECONDS = 2

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def is_loopback_host(url: str) -> bool:
    """True for localhost and loopback IPs: a local twin, never a real Azure endpoint."""
    host = (urlsplit(url).hostname or "").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def arm_scope(arm_endpoint: str) -> str:
    """Token scope for an ARM endpoint: the endpoint's own audience, the public one for a loopback twin.

    Sovereign clouds (management.usgovcloudapi.net, management.chinacloudapi.cn, Azure Stack hubs)
    accept ``{endpoint}/.default``; a loopback twin emulates public Azure and its audience.
    """
    parts = urlsplit(arm_endpoint)
    if is_loopback_host(arm_endpoint) or (parts.hostname or "").lower() == "management.azure.com":
        return PUBLIC_ARM_SCOPE
    return f"https://{parts.netloc}/.default"


class BoundedRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's retry, except that a Retry-After longer than a short bound is not slept in-process.

    The error then surfaces, is classified with its ``retry_after_seconds`` and the orchestrator
    waits on a durable timer - on the twin's virtual clock a real sleep would stall everything.
    """

    def __init__(self, *, max_retry_after: float = MAX_IN_PROCESS_RETRY_AFTER_SECONDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_retry_after = max_retry_after

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        wait = retry_after_seconds(dict(response.http_response.headers))
        if wait is not None and wait > self._max_retry_after:
            return False
        return bool(super().is_retry(settings, response))


class _PerCallKeywordNoise(logging.Filter):
    """The basic-topic send also hands per-call keywords to its event model, which logs each as unknown."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is not a known attribute of class" not in record.getMessage()


_EVENTGRID_MODEL_LOGGER = "azure.eventgrid._legacy._generated._serialization"


class TopicPublisher:
    """An Event Grid basic-topic publisher whose transport and retry settings actually apply.

    azure-eventgrid 4.22's ``EventGridPublisherClient`` drops its constructor keywords for basic
    topics (only namespace topics get them), so the CA bundle and retry settings go on each send.
    """

    def __init__(self, client: EventGridPublisherClient, call_kwargs: dict[str, Any]) -> None:
        self.client = client
        self._call_kwargs = call_kwargs
        model_logger = logging.getLogger(_EVENTGRID_MODEL_LOGGER)
        if not any(isinstance(f, _PerCallKeywordNoise) for f in model_logger.filters):
            model_logger.addFilter(_PerCallKeywordNoise())

    def send(self, events: list[CloudEvent[Any]]) -> None:
        self.client.send(events, **self._call_kwargs)


@dataclass(frozen=True)
class ClientConfig:
    """Everything the factory needs, decoupled from the environment (tests build one directly)."""

    vault_url: str
    arm_endpoint: str = PUBLIC_ARM_ENDPOINT
    ca_bundle: str | None = None
    retry_total: int = 3
    polling_interval: float = 1.0
    managed_identity_client_id: str | None = None
    events_topic_endpoint: str | None = None
    events_topic_key: str | None = field(default=None, repr=False)
    # None: skip Key Vault's challenge-resource check only for loopback vault hosts (the twin).
    verify_challenge_resource: bool | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientConfig:
        key = settings.events_topic_key.get_secret_value() if settings.events_topic_key else None
        return cls(
            vault_url=settings.vault_url,
            arm_endpoint=settings.arm_endpoint,
            ca_bundle=settings.ca_bundle,
            retry_total=settings.sdk_retry_total,
            managed_identity_client_id=settings.azure_client_id,
            events_topic_endpoint=settings.events_topic_endpoint,
            events_topic_key=key,
        )

    def verify_challenge_for(self, vault_url: str) -> bool:
        if self.verify_challenge_resource is not None:
            return self.verify_challenge_resource
        return not is_loopback_host(vault_url)


class ClientFactory:
    """Builds and caches SDK clients (one per subscription / vault) over one credential."""

    def __init__(self, config: ClientConfig, credential: TokenCredential | None = None) -> None:
        self.config = config
        self._credential = credential
        self._lock = threading.Lock()
        self._compute: dict[str, ComputeManagementClient] = {}
        self._authorization: dict[str, AuthorizationManagementClient] = {}
        self._keys: dict[str, KeyClient] = {}
        self._events: TopicPublisher | None = None

    @property
    def credential(self) -> TokenCredential:
        with self._lock:
            if self._credential is None:
                extra: dict[str, Any] = {"connection_verify": self.config.ca_bundle} if self.config.ca_bundle else {}
                self._credential = DefaultAzureCredential(
                    managed_identity_client_id=self.config.managed_identity_client_id, **extra
                )
            return self._credential

    def _transport_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.config.ca_bundle:
            kwargs["connection_verify"] = self.config.ca_bundle
        return kwargs

    def _retry_kwargs(self) -> dict[str, Any]:
        return {
            "retry_total": self.config.retry_total,
            "retry_backoff_factor": RETRY_BACKOFF_FACTOR,
            "retry_backoff_max": RETRY_BACKOFF_MAX_SECONDS,
        }

    def _arm_kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.config.arm_endpoint,
            "credential_scopes": [arm_scope(self.config.arm_endpoint)],
            "polling_interval": self.config.polling_interval,
            "retry_policy": BoundedRetryPolicy(**self._retry_kwargs()),
            **self._transport_kwargs(),
        }

    def compute(self, subscription_id: str) -> ComputeManagementClient:
        key = subscription_id.lower()
        credential = self.credential
        with self._lock:
            if key not in self._compute:
                self._compute[key] = ComputeManagementClient(credential, subscription_id, **self._arm_kwargs())
            return self._compute[key]

    def authorization(self, subscription_id: str) -> AuthorizationManagementClient:
        key = subscription_id.lower()
        credential = self.credential
        with self._lock:
            if key not in self._authorization:
                self._authorization[key] = AuthorizationManagementClient(
                    credential, subscription_id, **self._arm_kwargs()
                )
            return self._authorization[key]

    def keys(self, vault_url: str | None = None) -> KeyClient:
        url = (vault_url or self.config.vault_url).rstrip("/")
        credential = self.credential
        with self._lock:
            if url.lower() not in self._keys:
                self._keys[url.lower()] = KeyClient(
                    url,
                    credential,
                    verify_challenge_resource=self.config.verify_challenge_for(url),
                    retry_policy=BoundedRetryPolicy(**self._retry_kwargs()),
                    **self._transport_kwargs(),
                )
            return self._keys[url.lower()]

    def events(self) -> TopicPublisher | None:
        """The topic publisher, or None when no topic is configured (events are then not published)."""
        endpoint = self.config.events_topic_endpoint
        if not endpoint:
            return None
        key = self.config.events_topic_key
        credential: AzureKeyCredential | TokenCredential = AzureKeyCredential(key) if key else self.credential
        with self._lock:
            if self._events is None:
                call_kwargs = {**self._retry_kwargs(), **self._transport_kwargs()}
                self._events = TopicPublisher(EventGridPublisherClient(endpoint, credential), call_kwargs)
            return self._events


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, validated once (activities read them; orchestrators never do)."""
    return load_settings()


@lru_cache(maxsize=1)
def get_factory() -> ClientFactory:
    """The per-process factory, so clients (and their token caches and connections) are reused."""
    return ClientFactory(ClientConfig.from_settings(get_settings()))


def reset() -> None:
    """Forget cached settings and clients (tests that change the environment)."""
    get_settings.cache_clear()
    get_factory.cache_clear()
