"""Sample app for the crash test: an activity that blocks on a marker file next to a pending timer."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.orchestration_trigger(context_name="context")
def crash_orch(context: df.DurableOrchestrationContext):
    folder = context.get_input()["dir"]
    first = yield context.call_activity("step", "one")
    slow = context.call_activity("slow", folder)
    nap = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    results = yield context.task_all([slow, nap])
    last = yield context.call_activity("step", "two")
    return [first, results[0], last]


@app.activity_trigger(input_name="name")
def step(name: str) -> str:
    return f"step {name}"


@app.activity_trigger(input_name="folder")
def slow(folder: str) -> str:
    marker_dir = Path(folder)
    runs = len(list(marker_dir.glob("started-*")))
    (marker_dir / f"started-{runs + 1}").touch()
    deadline = time.monotonic() + 120
    while not (marker_dir / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the release marker never appeared")
        time.sleep(0.02)
    return "slow done"


@app.route(route="start", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = await client.start_new("crash_orch", client_input=req.get_json())
    return client.create_check_status_response(req, instance_id)
