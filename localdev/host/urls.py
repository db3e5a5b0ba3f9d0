"""The URLs the extension hands out: management links and the durable-client binding payload.

Shapes follow ``HttpApiHandler.GetClientResponseLinks`` / ``GetInstanceCreationLinks`` and
``BindingHelper`` (``OrchestrationClientInputData``). Everything points at this host; the RPC
base URL is served on the same port as the app (``/durabletask/``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

PLACEHOLDER_ID = "INSTANCEID"


@dataclass(frozen=True)
class HostUrls:
    base_url: str
    task_hub: str
    connection: str = "Storage"
    system_key: str | None = None

    @property
    def webhook(self) -> str:
        return f"{self.base_url}/runtime/webhooks/durabletask"

    @property
    def rpc_base(self) -> str:
        return f"{self.base_url}/durabletask/"

    def query_suffix(self, task_hub: str | None = None, connection: str | None = None) -> str:
        suffix = f"taskHub={quote(task_hub or self.task_hub)}&connection={quote(connection or self.connection)}"
        return f"{suffix}&code={quote(self.system_key)}" if self.system_key else suffix

    def management(
        self,
        instance_id: str,
        *,
        origin: str | None = None,
        task_hub: str | None = None,
        connection: str | None = None,
    ) -> dict[str, str]:
        base = self.webhook
        if origin:
            parts = urlsplit(base)
            new = urlsplit(origin)
            base = urlunsplit((new.scheme, new.netloc, parts.path, "", ""))
        prefix = f"{base}/instances/{quote(instance_id, safe='')}"
        query = self.query_suffix(task_hub, connection)
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{prefix}?{query}",
            "sendEventPostUri": f"{prefix}/raiseEvent/{{eventName}}?{query}",
            "terminatePostUri": f"{prefix}/terminate?reason={{text}}&{query}",
            "rewindPostUri": f"{prefix}/rewind?reason={{text}}&{query}",
            "purgeHistoryDeleteUri": f"{prefix}?{query}",
            "restartPostUri": f"{prefix}/restart?{query}",
            "suspendPostUri": f"{prefix}/suspend?reason={{text}}&{query}",
            "resumePostUri": f"{prefix}/resume?reason={{text}}&{query}",
        }

    def client_binding(self, task_hub: str | None = None, connection: str | None = None) -> str:
        """The JSON string a ``durableClient`` input binding receives."""
        query = self.query_suffix(task_hub, connection)
        creation = f"{self.webhook}/orchestrators/{{functionName}}[/{{instanceId}}]"
        management = self.management(PLACEHOLDER_ID, task_hub=task_hub, connection=connection)
        management["id"] = PLACEHOLDER_ID
        return json.dumps(
            {
                "taskHubName": task_hub or self.task_hub,
                "connectionName": connection or self.connection,
                "creationUrls": {
                    "createNewInstancePostUri": f"{creation}?{query}",
                    "createAndWaitOnNewInstancePostUri": (
                        f"{creation}?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&{query}"
                    ),
                },
                "managementUrls": management,
                "baseUrl": self.webhook,
                "requiredQueryStringParameters": f"code={self.system_key}" if self.system_key else "",
                "rpcBaseUrl": self.rpc_base,
                "httpBaseUrl": "",
            }
        )
