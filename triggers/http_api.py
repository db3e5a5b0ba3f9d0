"""Ops HTTP API (function auth): start, list, inspect, retry, bulk-retry and offboard onboardings.

Responses link to these routes only: the Durable management URLs embed the system key and are
never returned (reference/anchors.md §4.5).
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ValidationError

from skr import clients
from skr.models import OnboardingRequest, Outcome, TriggerSource, VmResourceId
from skr.naming import offboarding_instance_id
from skr.settings import Settings
from skr.workflow.configure import scope_guard
from skr.workflow.http_api import (
    OnboardingPage,
    OnboardingView,
    RetryFailedBody,
    StartOnboardingBody,
    error_body,
    field_errors,
    onboarding_view,
    query_values,
)
from skr.workflow.instances import InstanceSnapshot, StartAction
from skr.workflow.listing import ContinuationError, ListQuery, paginate
from triggers._azure import read_identity
from triggers._instances import ONBOARD_PREFIX, Instances, OffboardSkip, start_offboarding, start_onboarding

bp = df.Blueprint()
log = logging.getLogger("skr.triggers.http")

B = TypeVar("B", bound=BaseModel)
AUTH = func.AuthLevel.FUNCTION
ROUTE = "onboardings"


# -- responses ---------------------------------------------------------------------------------


def respond(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    data = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return func.HttpResponse(json.dumps(data), status_code=status, mimetype="application/json", headers=headers or {})


def problem(status: int, code: str, message: str, **extra: Any) -> func.HttpResponse:
    body = error_body(code, message, extra.pop("fields", None))
    body["error"].update(extra)
    return respond(status, body)


def invalid(exc: ValidationError, what: str) -> func.HttpResponse:
    return problem(400, "invalid_request", f"invalid {what}", fields=field_errors(exc))


def base_url(req: func.HttpRequest) -> str:
    """``{scheme}://{host}/api/onboardings`` of this request (no query: it may hold the function key)."""
    parts = urlsplit(req.url)
    path = parts.path.rstrip("/")
    marker = f"/{ROUTE}"
    at = path.find(marker)
    prefix = path[: at + len(marker)] if at >= 0 else f"/api/{ROUTE}"
    return f"{parts.scheme}://{parts.netloc}{prefix}"


def json_body(req: func.HttpRequest, *, optional: bool = False) -> tuple[Any, func.HttpResponse | None]:
    raw = req.get_body() or b""
    if not raw.strip():
        if optional:
            return {}, None
        return None, problem(400, "invalid_request", "a JSON body is required")
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError):
        return None, problem(400, "invalid_json", "the body is not valid JSON")


def parse_body(req: func.HttpRequest, model: type[B], what: str, *, optional: bool = False) -> B | func.HttpResponse:
    """The JSON body validated as ``model``, or the 400 response that says what is wrong."""
    data, error = json_body(req, optional=optional)
    if error is not None:
        return error
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return invalid(exc, what)


# -- shared ----------------------------------------------------------------------------------------


async def view_of(instances: Instances, snapshot: InstanceSnapshot, req: func.HttpRequest) -> OnboardingView:
    vm_id = snapshot.vm_id
    offboarding = await instances.get(offboarding_instance_id(vm_id)) if vm_id is not None else None
    return onboarding_view(snapshot, base_url=base_url(req), vm_id=vm_id, offboarding=offboarding)


async def find(instances: Instances, instance_id: str) -> InstanceSnapshot | None:
    if not instance_id.startswith(ONBOARD_PREFIX):
        return None  # only onboardings are served here
    return await instances.get(instance_id, show_input=True)


def out_of_scope(settings: Settings, vm_id: VmResourceId) -> func.HttpResponse | None:
    guard = scope_guard(settings)
    if guard.check_id(vm_id) is None:
        return None
    return problem(403, "out_of_scope", f"{vm_id} is outside the configured {guard.describe()}")


async def restart(
    instances: Instances, snapshot: InstanceSnapshot, settings: Settings
) -> tuple[StartAction, str] | func.HttpResponse:
    """Run a finished onboarding again with its original request (a retry is an explicit restart)."""
    vm_id = snapshot.vm_id
    if vm_id is None:
        return problem(409, "not_retryable", "the instance does not record which VM it onboards")
    if (rejected := out_of_scope(settings, vm_id)) is not None:
        return rejected
    key_name = None
    if isinstance(snapshot.input, dict) and isinstance(snapshot.input.get("request"), dict):
        key_name = snapshot.input["request"].get("key_name")
    request = OnboardingRequest(vm_id=vm_id, key_name=key_name, source=TriggerSource.RETRY)
    decision, instance_id = await start_onboarding(
        instances, request, settings, explicit=True, identity=lambda: read_identity(vm_id)
    )
    return decision.action, instance_id


# -- handlers --------------------------------------------------------------------------------------


async def create(req: func.HttpRequest, instances: Instances) -> func.HttpResponse:
    body = parse_body(req, StartOnboardingBody, "onboarding request")
    if isinstance(body, func.HttpResponse):
        return body
    settings = clients.get_settings()
    if (rejected := out_of_scope(settings, body.vm_id)) is not None:
        return rejected
    request = OnboardingRequest(vm_id=body.vm_id, key_name=body.key_name, source=TriggerSource.HTTP)
    decision, instance_id = await start_onboarding(
        instances, request, settings, explicit=True, identity=lambda: read_identity(body.vm_id)
    )
    snapshot = await instances.get(instance_id, show_input=True)
    view = await view_of(instances, snapshot, req) if snapshot else None
    if decision.action is StartAction.SKIP_RUNNING:
        return problem(409, "already_running", f"{instance_id} is already running", instance=_dump(view))
    location = f"{base_url(req)}/{instance_id}"
    return respond(202, view or {"id": instance_id}, {"Location": location})


async def listing(req: func.HttpRequest, instances: Instances) -> func.HttpResponse:
    try:
        query = ListQuery.model_validate(query_values(dict(req.params)))
    except ValidationError as exc:
        return invalid(exc, "query")
    try:
        snapshots = await instances.list(ONBOARD_PREFIX, created_from=query.created_from, created_to=query.created_to)
        page, token = paginate(snapshots, query)
    except ContinuationError as exc:
        return problem(400, "invalid_request", str(exc))
    base = base_url(req)
    items = [onboarding_view(s, base_url=base) for s in page]
    next_url = None
    if token is not None:
        params = {k: v for k, v in query_values(dict(req.params)).items() if k != "continuation"}
        next_url = f"{base}?{urlencode({**params, 'continuation': token})}"
    return respond(200, OnboardingPage(items=items, continuation=token, next=next_url))


async def show(req: func.HttpRequest, instances: Instances, instance_id: str) -> func.HttpResponse:
    snapshot = await find(instances, instance_id)
    if snapshot is None:
        return problem(404, "not_found", f"no onboarding {instance_id!r}")
    return respond(200, await view_of(instances, snapshot, req))


async def offboard(req: func.HttpRequest, instances: Instances, instance_id: str) -> func.HttpResponse:
    snapshot = await find(instances, instance_id)
    if snapshot is None or snapshot.vm_id is None:
        return problem(404, "not_found", f"no onboarding {instance_id!r}")
    settings = clients.get_settings()
    try:
        started = await start_offboarding(instances, snapshot.vm_id, settings, source=TriggerSource.HTTP)
    except OffboardSkip as skip:
        return problem(409, "conflict" if skip.conflict else "nothing_to_offboard", str(skip))
    view = await view_of(instances, snapshot, req)
    return respond(202, view, {"Location": f"{base_url(req)}/{instance_id}", "X-Offboarding-Id": started})


async def retry(req: func.HttpRequest, instances: Instances, instance_id: str) -> func.HttpResponse:
    snapshot = await find(instances, instance_id)
    if snapshot is None:
        return problem(404, "not_found", f"no onboarding {instance_id!r}")
    if snapshot.active:
        return problem(409, "already_running", f"{instance_id} is {snapshot.runtime_status}")
    outcome = await restart(instances, snapshot, clients.get_settings())
    if isinstance(outcome, func.HttpResponse):
        return outcome
    action, started = outcome
    if action is StartAction.SKIP_RUNNING:
        return problem(409, "already_running", f"{started} was started concurrently")
    fresh = await instances.get(started, show_input=True)
    return respond(202, await view_of(instances, fresh or snapshot, req), {"Location": f"{base_url(req)}/{started}"})


async def retry_failed(req: func.HttpRequest, instances: Instances) -> func.HttpResponse:
    body = parse_body(req, RetryFailedBody, "retry filter", optional=True)
    if isinstance(body, func.HttpResponse):
        return body
    settings = clients.get_settings()
    snapshots = await instances.list(ONBOARD_PREFIX, created_from=body.created_from, created_to=body.created_to)
    retried: list[str] = []
    skipped: list[dict[str, str]] = []
    for snapshot in sorted(snapshots, key=lambda s: s.instance_id):
        if snapshot.outcome is not Outcome.FAILED:
            continue
        result = snapshot.result
        if body.failure_code is not None and (result is None or result.failure_code is not body.failure_code):
            continue
        if len(retried) >= body.limit:
            skipped.append({"id": snapshot.instance_id, "reason": "over the limit"})
            continue
        full = await instances.get(snapshot.instance_id, show_input=True) or snapshot
        outcome = await restart(instances, full, settings)
        if isinstance(outcome, func.HttpResponse):
            skipped.append({"id": snapshot.instance_id, "reason": json.loads(outcome.get_body())["error"]["code"]})
        elif outcome[0] is StartAction.SKIP_RUNNING:
            skipped.append({"id": snapshot.instance_id, "reason": "already_running"})
        else:
            retried.append(outcome[1])
    return respond(202, {"retried": retried, "skipped": skipped})


def _dump(view: OnboardingView | None) -> dict[str, Any] | None:
    return None if view is None else view.model_dump(mode="json")


# -- functions -----------------------------------------------------------------------------------


@bp.route(route=ROUTE, methods=["GET", "POST"], auth_level=AUTH)
@bp.durable_client_input(client_name="client")
async def onboardings(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instances = Instances(client)
    if req.method.upper() == "POST":
        return await create(req, instances)
    return await listing(req, instances)


@bp.route(route=f"{ROUTE}/retry-failed", methods=["POST"], auth_level=AUTH)
@bp.durable_client_input(client_name="client")
async def onboardings_retry_failed(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await retry_failed(req, Instances(client))


@bp.route(route=ROUTE + "/{instance_id}", methods=["GET", "DELETE"], auth_level=AUTH)
@bp.durable_client_input(client_name="client")
async def onboarding(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = req.route_params.get("instance_id", "")
    instances = Instances(client)
    if req.method.upper() == "DELETE":
        return await offboard(req, instances, instance_id)
    return await show(req, instances, instance_id)


@bp.route(route=ROUTE + "/{instance_id}/retry", methods=["POST"], auth_level=AUTH)
@bp.durable_client_input(client_name="client")
async def onboarding_retry(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await retry(req, Instances(client), req.route_params.get("instance_id", ""))
