"""Azure Functions entry point: builds the Durable app and registers every blueprint."""

import azure.durable_functions as df
import azure.functions as func

from activities import BLUEPRINTS as ACTIVITY_BLUEPRINTS
from orchestrators import BLUEPRINTS as ORCHESTRATOR_BLUEPRINTS
from triggers import BLUEPRINTS as TRIGGER_BLUEPRINTS

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in (*ORCHESTRATOR_BLUEPRINTS, *ACTIVITY_BLUEPRINTS, *TRIGGER_BLUEPRINTS):
    app.register_functions(blueprint)
