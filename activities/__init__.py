"""Activities of the SKR Orchestrator; each module adds its blueprint to BLUEPRINTS."""

import azure.durable_functions as df

BLUEPRINTS: list[df.Blueprint] = []
