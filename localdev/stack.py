"""The whole product offline: the Azure twin and the local Durable host in one process, one clock.

The app runs unchanged (``function_app:app``); only its app settings point it at the twin - vault
URL and ARM id, MAA endpoint, ARM endpoint, CA bundle, the managed-identity endpoint, the events
topic, the scopes - exactly as production would be pointed at Azure. The twin delivers its resource
events to the host's Event Grid webhook. Used by the end-to-end tests, the demo and benchmarks::

    with start_stack() as stack:
        vm = stack.twin.create_vm("cvm-1")          # its write event reaches the app
        status = stack.wait_for_onboarding(vm)      # the virtual clock skips every wait
        stack.api("GET", f"/api/onboardings/{status.instance_id}")

One stack per process at a time: app settings are process environment variables.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localdev.clock import Clock, VirtualClock, make_clock
from localdev.host.harness import HttpResult, InstanceStatus, LocalHost
from localdev.twin.core import Twin, TwinConfig
from localdev.twin.model import SimVm
from localdev.twin.testing import clear_challenge_cache

EVENT_FUNCTION = "on_resource_event"
RECONCILE_FUNCTION = "reconcile"
DEFAULT_SCHEDULE = "0 0 3 * * *"  # once a day: tests and demos run reconcile on demand


def webhook_url(host: LocalHost, function_key: str) -> str:
    """Where Event Grid delivers: the host's webhook for the app's Event Grid function, with the key."""
    return f"{host.base_url}/runtime/webhooks/eventgrid?functionName={EVENT_FUNCTION}&code={function_key}"


def app_settings(twin: Twin, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The app settings (and identity endpoint) that point the production code at ``twin``."""
    vault = twin.vault()
    env = {
        "SKR_VAULT_URL": vault.url,
        "SKR_VAULT_RESOURCE_ID": vault.resource_id,
        "SKR_MAA_ENDPOINT": twin.urls.maa,
        "SKR_ARM_ENDPOINT": twin.urls.arm,
        "SKR_CA_BUNDLE": twin.ca_bundle_path,
        "SKR_SCOPES": f"/subscriptions/{twin.config.subscription_id}",
        "SKR_EVENTS_TOPIC_ENDPOINT": twin.urls.events,
        "SKR_RECONCILE_SCHEDULE": DEFAULT_SCHEDULE,
        "SKR_SDK_RETRY_TOTAL": "1",
        "IDENTITY_ENDPOINT": twin.urls.identity,
        "IDENTITY_HEADER": twin.identity_header,
    }
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@dataclass
class Stack:
    """A running twin + host; ``api`` calls the app's HTTP routes with the function key."""

    twin: Twin
    host: LocalHost
    clock: Clock
    settings: dict[str, str]
    function_key: str
    db_path: Path | None = None
    _timer_triggers: bool = False

    # --- the app's HTTP API -------------------------------------------------------------------------
    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> HttpResult:
        """An HTTP request to the app, authenticated with the function key (``key=""``: none)."""
        offered = self.function_key if key is None else key
        headers = {"x-functions-key": offered} if offered else {}
        return self.host.invoke_http(method, path, body, headers=headers, query=query)

    # --- instances ------------------------------------------------------------------------------------
    @staticmethod
    def onboarding_id(vm: SimVm | str) -> str:
        from skr.models import VmResourceId
        from skr.naming import onboarding_instance_id

        return onboarding_instance_id(VmResourceId.parse(vm if isinstance(vm, str) else vm.resource_id))

    @staticmethod
    def offboarding_id(vm: SimVm | str) -> str:
        from skr.models import VmResourceId
        from skr.naming import offboarding_instance_id

        return offboarding_instance_id(VmResourceId.parse(vm if isinstance(vm, str) else vm.resource_id))

    def wait_for_instance(self, instance_id: str, timeout: float = 120.0) -> InstanceStatus:
        """Wait until the instance exists and finished; fails fast once nothing is left in flight.

        Events reach the app asynchronously, but a pending delivery holds the shared clock, so
        "everything idle and still no finished instance" means it will never come.
        """
        return self.host.wait_for(instance_id, timeout=timeout, fail_if_idle=True)

    def wait_for_onboarding(self, vm: SimVm | str, timeout: float = 120.0) -> InstanceStatus:
        return self.wait_for_instance(self.onboarding_id(vm), timeout)

    def wait_for_offboarding(self, vm: SimVm | str, timeout: float = 120.0) -> InstanceStatus:
        return self.wait_for_instance(self.offboarding_id(vm), timeout)

    def settle(self, timeout: float = 120.0) -> None:
        """Run until nothing is in flight: no instance running, no event delivery pending."""
        self.host.run_until_idle(timeout=timeout)

    def run_reconcile(self) -> HttpResult:
        """One reconcile pass now (the timer function, invoked through the host's admin route)."""
        return self.api("POST", f"/admin/functions/{RECONCILE_FUNCTION}", {"input": ""})

    def deliver_events(self, events: list[dict[str, Any]]) -> HttpResult:
        """POST Event Grid events to the app's webhook, as Event Grid does (with the key)."""
        headers = {"aeg-event-type": "Notification", "x-functions-key": self.function_key}
        return self.host.invoke_http(
            "POST", "/runtime/webhooks/eventgrid", events, headers=headers, query={"functionName": EVENT_FUNCTION}
        )

    def now(self) -> float:
        return self.clock.time()

    def restart_host(self) -> LocalHost:
        """Stop the host (as if its process died) and start a new one on the same store and clock.

        Work in flight is re-derived from the store, as after a crash: activities run again.
        """
        if self.db_path is None:
            raise RuntimeError("restart_host needs a stack started with db_path (an in-memory store dies with it)")
        self.host.stop()
        self.host = LocalHost(
            "function_app:app",
            clock=self.clock,
            db_path=self.db_path,
            settings=self.settings,
            function_key=self.function_key,
            timer_triggers=self._timer_triggers,
        )
        self.host.start()
        self.twin.events.configure(url=webhook_url(self.host, self.function_key))
        return self.host


@contextmanager
def start_stack(
    *,
    clock: Clock | str = "virtual",
    twin_config: TwinConfig | None = None,
    settings: Mapping[str, str | None] | None = None,
    db_path: str | Path | None = None,
    function_key: str | None = None,
    deliver_events: bool = True,
    timer_triggers: bool = False,
    host_log_level: int | None = None,
) -> Iterator[Stack]:
    """Start the twin and the host on one clock, the app's settings pointed at the twin.

    ``settings`` adds or overrides app settings (``None`` removes one). ``db_path`` keeps the
    Durable store in a SQLite file (default: in memory). ``deliver_events`` points the twin's Event
    Grid delivery at the host's webhook. ``timer_triggers`` runs the reconcile timer on schedule.
    """
    from skr import clients

    the_clock = make_clock(clock) if isinstance(clock, str) else clock
    key = function_key or secrets.token_urlsafe(18)
    with ExitStack() as exits:
        twin = Twin(twin_config or TwinConfig(), the_clock)
        twin.start()
        exits.callback(clear_challenge_cache)
        exits.callback(twin.stop)
        env = app_settings(twin, settings)
        clients.reset()
        exits.callback(clients.reset)
        extra: dict[str, Any] = {}
        if host_log_level is not None:
            extra["log_level"] = host_log_level
        host = LocalHost(
            "function_app:app",
            clock=the_clock,
            db_path=db_path,
            settings=env,
            function_key=key,
            timer_triggers=timer_triggers,
            **extra,
        )
        host.start()
        stack = Stack(
            twin=twin,
            host=host,
            clock=the_clock,
            settings=env,
            function_key=key,
            db_path=Path(db_path) if db_path is not None else None,
            _timer_triggers=timer_triggers,
        )
        exits.callback(lambda: stack.host.stop())  # noqa: PLW0108 - the host in place at exit (restarts swap it)
        if deliver_events:
            twin.events.configure(url=webhook_url(host, key))
            exits.callback(lambda: twin.events.configure(url=None))
        yield stack


def is_virtual(stack: Stack) -> bool:
    return isinstance(stack.clock, VirtualClock)


__all__ = ["Stack", "app_settings", "is_virtual", "start_stack"]
