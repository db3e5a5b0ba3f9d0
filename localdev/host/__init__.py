"""Local Durable Functions host: runs any v2-model Durable app on the real ``azure-functions-durable`` 1.x SDK.

See ``localdev/host/README.md``. The public test API is ``LocalHost`` (a blocking harness);
``python -m localdev serve`` runs the same host as a server.
"""

from localdev.host.engine import ActivityCall
from localdev.host.harness import HostIdleError, HttpResult, InstanceStatus, LocalHost
from localdev.host.logs import LogEntry
from localdev.host.replay import ReplayMismatchError, ReplayReport, replay_history
from localdev.host.runtime import HostOptions, HostRuntime, options_from_host_json

__all__ = [
    "ActivityCall",
    "HostIdleError",
    "HostOptions",
    "HostRuntime",
    "HttpResult",
    "InstanceStatus",
    "LocalHost",
    "LogEntry",
    "ReplayMismatchError",
    "ReplayReport",
    "options_from_host_json",
    "replay_history",
]
