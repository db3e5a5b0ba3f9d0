"""Activities of the SKR Orchestrator; each module adds its blueprint to BLUEPRINTS."""

import azure.durable_functions as df

from activities import events, keys, rbac, run_command, vms

BLUEPRINTS: list[df.Blueprint] = [vms.bp, keys.bp, rbac.bp, run_command.bp, events.bp]
