"""Triggers of the SKR Orchestrator: Event Grid, HTTP and timer entry points (durable clients)."""

import azure.durable_functions as df

from triggers import events, http_api, reconcile

BLUEPRINTS: list[df.Blueprint] = [events.bp, http_api.bp, reconcile.bp]
