"""The twin's world in one object: configuration, state, helpers and its listeners.

Every service module (ARM, Key Vault, MAA, IMDS, Event Grid, admin) is a set of Starlette routes
built from a :class:`Twin`; they share its records, clock, RBAC engine, identity, throttling,
faults, counters and event delivery. ``Twin.start()`` serves them on loopback; the Python methods
below mirror the admin HTTP API so tests can arrange a scenario without HTTP.
"""

from __future__ import annotations

import random
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from localdev.clock import Clock, RealClock
from localdev.twin.counters import Counters
from localdev.twin.events import DeliveryConfig, Events
from localdev.twin.faults import Faults
from localdev.twin.http import TwinHttpError, arm_error_response, kv_error_response
from localdev.twin.identity import Identity
from localdev.twin.model import Principal, SimVm, TeeProfile, Vault
from localdev.twin.operations import Operations
from localdev.twin.rbac import Decision, PropagationModel, Rbac
from localdev.twin.resource_ids import vault_resource_id, vm_resource_id
from localdev.twin.throttle import Throttle
from localdev.twin.tls import TlsMaterial

__all__ = [
    "Decision",
    "Twin",
    "TwinConfig",
    "TwinHttpError",
    "TwinUrls",
    "start_twin",
]

ARM_AUDIENCE = "https://management.azure.com"
VAULT_AUDIENCE = "https://vault.azure.net"
EVENTGRID_AUDIENCE = "https://eventgrid.azure.net"


@dataclass
class TwinConfig:
    """Everything that shapes one twin; every field has a working default."""

    subscription_id: str = ""  # "" = derived from ``seed`` (stable across runs with the same seed)
    tenant_id: str = ""  # "" = derived from ``seed``
    location: str = "westeurope"
    resource_group: str = "skr-rg"  # holds the twin's own vaults and Event Grid topic
    vault_names: tuple[str, ...] = ("skr-vault",)
    vault_sku: str = "premium"  # "standard" refuses HSM keys, like the real service
    topic_name: str = "skr-events"
    host: str = "127.0.0.1"
    seed: int = 0
    # RBAC propagation delay per new assignment: a PropagationModel or a spec such as
    # "fixed:30", "uniform:5:60", "empirical" (median ~30 s, p95 ~3 min, max 10 min).
    propagation: PropagationModel | str = "empirical"
    principal_replication_seconds: float = 0.0  # PrincipalNotFound window for new principals
    run_command_duration_seconds: float = 20.0  # read by the run-command emulation
    vm_provision_seconds: float = 0.0  # VM PUT: "Creating" for this long, then "Succeeded"
    vm_delete_seconds: float = 0.0  # VM DELETE: "Deleting" for this long
    key_delete_seconds: float = 0.0  # soft delete: /deletedkeys/{n} 404 for this long
    throttling: bool = True
    throttle_reads: tuple[float, float] = (250.0, 25.0)  # (burst, refill per second)
    throttle_writes: tuple[float, float] = (200.0, 10.0)
    throttle_deletes: tuple[float, float] = (200.0, 10.0)
    token_lifetime_seconds: float = 86_400.0
    arm_page_size: int = 50
    kv_page_size: int = 25
    soft_delete_retention_days: int = 90
    app_identity_name: str = "skr-orchestrator"
    app_may_write_role_definitions: bool = True  # lets the app create a custom release role
    webhook_url: str | None = None
    webhook_schema: str = "eventgrid"  # or "cloudevents"

    def __post_init__(self) -> None:
        rng = random.Random(f"twin-ids-{self.seed}")
        if not self.subscription_id:
            self.subscription_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        else:
            self.subscription_id = self.subscription_id.lower()
        if not self.tenant_id:
            self.tenant_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if not self.vault_names:
            raise ValueError("TwinConfig.vault_names needs at least one vault")
        if isinstance(self.propagation, str):
            self.propagation = PropagationModel.parse(self.propagation)

    @property
    def propagation_model(self) -> PropagationModel:
        assert isinstance(self.propagation, PropagationModel)
        return self.propagation


@dataclass
class TwinUrls:
    """Where each service listens (set by ``Twin.start``); vault URLs have no trailing slash."""

    arm: str = ""
    vaults: dict[str, str] = field(default_factory=dict)
    maa: str = ""
    imds: str = ""  # plain HTTP
    identity: str = ""  # plain HTTP, like App Service's IDENTITY_ENDPOINT
    events: str = ""  # Event Grid topic endpoint, ends with /api/events
    admin: str = ""

    @property
    def vault(self) -> str:
        """The first (default) vault's URL."""
        return next(iter(self.vaults.values()))


class Twin:
    """One emulated Azure tenant + subscription. Thread-safe: mutate state under ``self.lock``."""

    def __init__(self, config: TwinConfig | None = None, clock: Clock | None = None) -> None:
        self.config = config or TwinConfig()
        self.clock: Clock = clock or RealClock()
        self.rng = random.Random(self.config.seed)
        # Object ids from their own seeded stream: the same seed names the same principals (and so
        # the same deterministic assignment names) without shifting the delay draws of ``rng``.
        self._object_ids = random.Random(f"twin-object-ids-{self.config.seed}")
        self.lock = threading.RLock()
        self.tls = TlsMaterial.generate()
        self.urls = TwinUrls()
        self.vms: dict[str, SimVm] = {}  # lower-case resource id -> VM
        self.deleted_vms: dict[str, SimVm] = {}
        self.principals: dict[str, Principal] = {}  # object id -> principal
        self.vaults: dict[str, Vault] = {}  # lower-case vault name -> vault
        self.identity_header = secrets.token_urlsafe(24)
        self.counters = Counters()
        self.identity = Identity(self)
        self.rbac = Rbac(self)
        self.throttle = Throttle(self)
        self.faults = Faults(self)
        self.operations = Operations(self)
        self.events = Events(self, DeliveryConfig(url=self.config.webhook_url, schema=self.config.webhook_schema))
        self._server: Any = None
        for name in self.config.vault_names:
            rid = vault_resource_id(self.config.subscription_id, self.config.resource_group, name)
            self.vaults[name.lower()] = Vault(name=name, resource_id=rid, sku=self.config.vault_sku,
                                              location=self.config.location)
        self.topic_resource_id = (
            f"/subscriptions/{self.config.subscription_id}/resourceGroups/{self.config.resource_group}"
            f"/providers/Microsoft.EventGrid/topics/{self.config.topic_name}"
        )
        self.app_principal = self.add_principal(self.config.app_identity_name, replicated=True)
        self.operator_principal = self.add_principal("twin-operator", principal_type="User", replicated=True)
        self.rbac.seed_default_roles()

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> Twin:
        """Serve every listener on free loopback ports (returns once they accept connections)."""
        from localdev.twin.server import TwinServer

        if self._server is None:
            self._server = TwinServer(self)
            self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.events.close()

    def __enter__(self) -> Twin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_listener(self, name: str, service: str, routes: list[Any], *, tls: bool = False) -> str:
        """Serve ``routes`` on one more loopback port while running (e.g. a VM's own IMDS origin)."""
        if self._server is None:
            raise RuntimeError("the twin is not running")
        url: str = self._server.add_listener(name, service, routes, tls=tls)
        return url

    @property
    def loop(self) -> Any:
        """The asyncio loop serving requests (None until started)."""
        return None if self._server is None else self._server.loop

    @property
    def ca_bundle_path(self) -> str:
        return str(self.tls.ca_path)

    @property
    def info(self) -> dict[str, Any]:
        """The JSON line ``python -m localdev twin`` prints first."""
        return {
            "arm_url": self.urls.arm,
            "subscription_id": self.config.subscription_id,
            "tenant_id": self.config.tenant_id,
            "vaults": {vault.name: vault.url for vault in self.vaults.values()},
            "maa_url": self.urls.maa,
            "identity_endpoint": self.urls.identity,
            "identity_header": self.identity_header,
            "events_topic_url": self.urls.events,
            "admin_url": self.urls.admin,
            "ca_bundle": self.ca_bundle_path,
            "imds_url": self.urls.imds,
            "app_principal_id": self.app_principal.object_id,
            "app_client_id": self.app_principal.app_id,
            "resource_group": self.config.resource_group,
            "location": self.config.location,
            "clock": self.clock.kind,
        }

    # ------------------------------------------------------------------------------- lookups
    def vault(self, name: str | None = None) -> Vault:
        """A vault by name (case-insensitive); the default vault without a name."""
        if name is None:
            return next(iter(self.vaults.values()))
        return self.vaults[name.lower()]

    def find_vm(self, resource_id: str | None = None, *, vm_id: str | None = None,
                principal_id: str | None = None, name: str | None = None) -> SimVm | None:
        """A live VM by resource id (case-insensitive), vmId, identity principal id or name."""
        with self.lock:
            if resource_id is not None:
                return self.vms.get(resource_id.rstrip("/").lower())
            for vm in self.vms.values():
                if vm_id is not None and vm.vm_id.lower() == vm_id.lower():
                    return vm
                if principal_id is not None and (vm.principal_id or "").lower() == principal_id.lower():
                    return vm
                if name is not None and vm.name.lower() == name.lower():
                    return vm
        return None

    def principal(self, object_id: str) -> Principal | None:
        with self.lock:
            return self.principals.get(object_id.lower())

    # ------------------------------------------------------------------ python admin API
    def add_principal(self, display_name: str, *, principal_type: str = "ServicePrincipal",
                      object_id: str | None = None, replicated: bool = False,
                      vm_resource_id: str | None = None) -> Principal:
        """Register an Entra object. ``replicated=True`` skips the PrincipalNotFound window."""
        created = self.clock.time()
        if replicated:
            created -= self.config.principal_replication_seconds
        if object_id is None:
            with self.lock:
                object_id = str(uuid.UUID(int=self._object_ids.getrandbits(128), version=4))
        principal = Principal(object_id=object_id.lower(), display_name=display_name,
                              principal_type=principal_type, created_at=created,
                              vm_resource_id=vm_resource_id)
        with self.lock:
            self.principals[principal.object_id] = principal
        return principal

    def remove_principal(self, object_id: str) -> None:
        with self.lock:
            principal = self.principals.pop(object_id.lower(), None)
            if principal is not None:
                principal.deleted = True

    def grant(self, principal_id: str, role: str, scope: str, *, propagate: bool = False) -> dict[str, Any]:
        """Assign ``role`` (name, GUID or id) at ``scope``; effective now unless ``propagate``."""
        return self.rbac.grant(principal_id, role, scope, propagate=propagate)

    def create_vm(self, name: str, *, resource_group: str = "cvm-rg", tee: TeeProfile | str = TeeProfile.COMPLIANT_CVM,
                  os_type: str = "Linux", identity: bool = True, tags: dict[str, str] | None = None,
                  location: str | None = None, vm_size: str = "Standard_DC2as_v5",
                  caller_principal_id: str | None = None, emit_event: bool = True) -> SimVm:
        """A running VM in the configured subscription (a ResourceWriteSuccess event is delivered)."""
        from localdev.twin.compute_vms import create_simulated_vm

        return create_simulated_vm(self, name, resource_group=resource_group, tee=TeeProfile(tee), os_type=os_type,
                                   identity=identity, tags=tags or {}, location=location, vm_size=vm_size,
                                   caller_principal_id=caller_principal_id, emit_event=emit_event)

    def delete_vm(self, resource_id: str, *, caller_principal_id: str | None = None,
                  emit_event: bool = True) -> SimVm | None:
        """Delete a VM now: its identity leaves the directory; a ResourceDeleteSuccess event follows."""
        from localdev.twin.compute_vms import delete_simulated_vm

        return delete_simulated_vm(self, resource_id, caller_principal_id=caller_principal_id,
                                   emit_event=emit_event)

    def vm_resource_id(self, name: str, resource_group: str = "cvm-rg") -> str:
        return vm_resource_id(self.config.subscription_id, resource_group, name)

    # ------------------------------------------------------------- request helpers (routes)
    def arm_call(self, request: Request, action: str, scope: str, *, kind: str | None = None,
                 authorize: bool = True) -> Principal:
        """Authenticate an ARM request, throttle it, count it and check ``action`` at ``scope``.

        ``kind`` is the throttling bucket ("reads"/"writes"/"deletes"; default from the method).
        Raises :class:`TwinHttpError` with the ARM-shaped 401/403/429.
        """
        from localdev.twin.gate import arm_call

        return arm_call(self, request, action, scope, kind=kind, authorize=authorize)

    def kv_call(self, request: Request, data_action: str, scope: str, vault: Vault) -> Principal:
        """Authenticate a Key Vault request (401 challenge), count it and check the data action."""
        from localdev.twin.gate import kv_call

        return kv_call(self, request, data_action, scope, vault)

    def authenticate_arm(self, request: Request) -> Principal:
        """The caller of an ARM request (raises TwinHttpError with an ARM 401)."""
        from localdev.twin.gate import authenticate_arm

        return authenticate_arm(self, request)

    def authenticate_kv(self, request: Request) -> Principal:
        """The caller of a Key Vault request (raises TwinHttpError with the 401 challenge)."""
        from localdev.twin.gate import authenticate_kv

        return authenticate_kv(self, request)

    def vault_of(self, request: Request) -> Vault:
        """The vault whose listener received ``request``."""
        vault: Vault = request.scope["twin.vault"]
        return vault

    def arm_error(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                  details: list[dict[str, Any]] | None = None) -> JSONResponse:
        return arm_error_response(status, code, message, headers=headers, details=details)

    def kv_error(self, status: int, code: str, message: str, inner: str | None = None,
                 *, headers: dict[str, str] | None = None) -> JSONResponse:
        return kv_error_response(status, code, message, inner, headers=headers)

    def fail(self, response: Response) -> TwinHttpError:
        """``raise twin.fail(twin.arm_error(...))`` ends a handler with that response."""
        return TwinHttpError(response)


@contextmanager
def start_twin(config: TwinConfig | None = None, clock: Clock | None = None) -> Iterator[Twin]:
    """A started twin for the duration of the block (its TLS files are removed afterwards)."""
    twin = Twin(config, clock)
    twin.start()
    try:
        yield twin
    finally:
        twin.stop()
        twin.tls.cleanup()
