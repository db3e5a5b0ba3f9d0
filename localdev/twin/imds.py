"""Instance Metadata Service (IMDS) of each simulated VM, plain HTTP (reference skr_flow.md §3, §9.1).

Every VM has its own IMDS origin (``imds_url(twin, vm)`` = ``http://127.0.0.1:<port>``, a listener
started on first use, like the real ``http://169.254.169.254`` seen from inside that VM), so the
in-VM script gets a base URL without a path. The same handlers are also reachable on the shared IMDS listener under
``/vms/{vmId}`` (handy for tests and curl).

Endpoints: ``/metadata/identity/oauth2/token`` (managed-identity token, ``Metadata: true``
required), ``/metadata/instance`` and ``/metadata/instance/compute/vmId``. Errors use IMDS's
``{"error", "error_description"}`` shape. Fault kind ``imds_error`` (params ``status`` 404, 410,
429 or 5xx, optional ``retry_after``; match ``vm``) makes the token endpoint fail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from localdev.twin.attached import attached
from localdev.twin.identity import KNOWN_RESOURCES, normalize_audience
from localdev.twin.model import SimVm

if TYPE_CHECKING:
    from localdev.twin.core import Twin

IMDS_RESOURCES = frozenset(normalize_audience(r) for r in (*KNOWN_RESOURCES, "https://managedhsm.azure.net"))
FAULT_TEXT = {
    404: ("not_found", "IMDS is not available yet: the VM is being provisioned or updated."),
    410: ("gone", "IMDS is being updated; retry after some time (up to 70 seconds)."),
    429: ("too_many_requests", "Too many requests to IMDS; retry with backoff."),
}


def imds_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def _caller(vm: SimVm) -> str:
    return vm.principal_id or vm.vm_id


def _injected(twin: Twin, vm: SimVm) -> JSONResponse | None:
    fault = twin.faults.active("imds_error", service="imds", vm=vm.resource_id)
    if fault is None:
        return None
    status = int(fault.params.get("status", 500))
    error, description = FAULT_TEXT.get(status, ("internal_error", "IMDS encountered a transient error."))
    headers = {"Retry-After": str(fault.params["retry_after"])} if "retry_after" in fault.params else None
    return imds_error(status, error, str(fault.params.get("message", description)), headers)


def _metadata_header_ok(request: Request) -> bool:
    return request.headers.get("metadata") == "true" and "x-forwarded-for" not in request.headers


async def identity_token(twin: Twin, vm: SimVm, request: Request) -> Response:
    twin.counters.record(_caller(vm), "imds", "identity/oauth2/token")
    if not _metadata_header_ok(request):
        return imds_error(400, "bad_request_102", "Required metadata header not specified")
    injected = _injected(twin, vm)
    if injected is not None:
        return injected
    query = request.query_params
    if not query.get("api-version"):
        return imds_error(400, "invalid_request", "Required query variable 'api-version' is missing")
    resource = query.get("resource", "")
    if not resource:
        return imds_error(400, "invalid_request", "Required query variable 'resource' is missing")
    principal = twin.principal(vm.principal_id) if vm.principal_id else None
    if principal is None or not _selector_matches(query, vm, principal.app_id):
        return imds_error(400, "invalid_request", "Identity not found")
    if normalize_audience(resource) not in IMDS_RESOURCES:
        return imds_error(400, "invalid_resource",
                          f"AADSTS500011: The resource principal named {resource} was not found in the tenant "
                          f"named {twin.config.tenant_id}. This can happen if the application has not been "
                          "installed by the administrator of the tenant or consented to by any user in the tenant.")
    token = twin.identity.mint_token(principal.object_id, resource)
    now = int(twin.clock.time())
    lifetime = int(twin.config.token_lifetime_seconds)
    return JSONResponse({
        "access_token": token, "client_id": principal.app_id, "refresh_token": "",
        "expires_in": str(lifetime), "expires_on": str(now + lifetime), "ext_expires_in": str(lifetime),
        "not_before": str(now), "resource": resource, "token_type": "Bearer",
    })


def _selector_matches(query: Any, vm: SimVm, app_id: str) -> bool:
    """``client_id``/``object_id``/``msi_res_id`` must name the VM's (only) identity when given."""
    checks = {
        "client_id": app_id,
        "object_id": vm.principal_id or "",
        "principal_id": vm.principal_id or "",
        "msi_res_id": vm.resource_id,
        "mi_res_id": vm.resource_id,
    }
    return all(query[name].lower() == wanted.lower() for name, wanted in checks.items() if name in query)


def instance_document(twin: Twin, vm: SimVm) -> dict[str, Any]:
    security = vm.tee.security_type
    return {"compute": {
        "azEnvironment": "AzurePublicCloud", "location": vm.location, "name": vm.name, "osType": vm.os_type,
        "resourceGroupName": vm.resource_group, "resourceId": vm.resource_id, "subscriptionId": vm.subscription_id,
        "tagsList": [{"name": k, "value": v} for k, v in vm.tags.items()], "vmId": vm.vm_id,
        "vmSize": vm.vm_size,
        "securityProfile": {"secureBootEnabled": str(security is not None).lower(),
                            "virtualTpmEnabled": str(security is not None).lower(),
                            "securityType": security or ""},
    }}


async def instance(twin: Twin, vm: SimVm, request: Request) -> Response:
    twin.counters.record(_caller(vm), "imds", "instance")
    if not _metadata_header_ok(request):
        return JSONResponse({"error": "Bad request. Required metadata header not specified"}, status_code=400)
    if not request.query_params.get("api-version"):
        return JSONResponse({"error": "Bad request. api-version was not specified in the request. For more "
                                      "information refer to aka.ms/azureimds", "newest-versions": ["2021-12-13"]},
                            status_code=400)
    return JSONResponse(instance_document(twin, vm))


async def vm_id(twin: Twin, vm: SimVm, request: Request) -> Response:
    response = await instance(twin, vm, request)
    if response.status_code != 200:
        return response
    if request.query_params.get("format", "json") == "text":
        return PlainTextResponse(vm.vm_id)
    return JSONResponse(vm.vm_id)


_HANDLERS = (
    ("/metadata/identity/oauth2/token", identity_token),
    ("/metadata/instance/compute/vmId", vm_id),
    ("/metadata/instance", instance),
)


def vm_routes(twin: Twin, resolve: Any) -> list[BaseRoute]:
    """IMDS routes whose VM comes from ``resolve(request) -> SimVm | None``."""
    routes: list[BaseRoute] = []
    for path, handler in _HANDLERS:

        async def endpoint(request: Request, handler: Any = handler) -> Response:
            vm = resolve(request)
            if vm is None:
                return imds_error(404, "not_found", "This VM does not exist (anymore).")
            response: Response = await handler(twin, vm, request)
            return response

        routes.append(Route(path, endpoint, methods=["GET"]))
    return routes


def routes(twin: Twin) -> list[BaseRoute]:
    """Routes of the shared IMDS listener: ``/vms/{vmId}/metadata/...`` plus the sandbox clock."""
    from localdev.twin.sandbox import clock_routes

    def by_path(request: Request) -> SimVm | None:
        return twin.find_vm(vm_id=request.path_params["vm_id"])

    return [Mount("/vms/{vm_id}", routes=vm_routes(twin, by_path)), *clock_routes(twin)]


def imds_url(twin: Twin, vm: SimVm) -> str:
    """The VM's own IMDS origin (``http://127.0.0.1:<port>``), started on first use.

    Call from any thread except the twin's loop (starting a listener waits for it).
    """
    origins: dict[str, str] = attached(twin, "imds.origins", dict)
    with twin.lock:
        url = origins.get(vm.vm_id)
    if url is not None:
        return str(url)

    def this_vm(request: Request) -> SimVm | None:
        return twin.find_vm(vm_id=vm.vm_id)

    url = twin.add_listener(f"imds:{vm.name}", "imds", vm_routes(twin, this_vm))
    with twin.lock:
        return str(origins.setdefault(vm.vm_id, url))
