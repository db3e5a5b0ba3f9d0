"""The twin's admin HTTP API (``/admin/...`` on the admin listener): arrange scenarios, inject faults,
read counters and recorded events, drive the clock. Mirrors the Python methods of :class:`Twin`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from localdev.clock import VirtualClock
from localdev.twin.http import TwinHttpError
from localdev.twin.model import Principal, SimVm, TeeProfile
from localdev.twin.rbac import PropagationModel

if TYPE_CHECKING:
    from localdev.twin.core import Twin


class AdminError(TwinHttpError):
    """A 4xx of the admin API: ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(JSONResponse({"error": message}, status_code=status))


def vm_summary(vm: SimVm) -> dict[str, Any]:
    return {"resource_id": vm.resource_id, "name": vm.name, "resource_group": vm.resource_group, "vm_id": vm.vm_id,
            "tee": vm.tee.value, "os_type": vm.os_type, "principal_id": vm.principal_id, "tags": vm.tags,
            "location": vm.location, "provisioning_state": vm.provisioning_state, "deleted": vm.deleted}


def principal_summary(p: Principal) -> dict[str, Any]:
    return {"object_id": p.object_id, "app_id": p.app_id, "display_name": p.display_name,
            "principal_type": p.principal_type, "created_at": p.created_at, "vm_resource_id": p.vm_resource_id}


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise AdminError(400, f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise AdminError(400, "the body must be a JSON object")
    return body


class AdminApi:
    def __init__(self, twin: Twin) -> None:
        self.twin = twin

    def _vm(self, key: str, request: Request) -> SimVm:
        twin = self.twin
        resource_id = request.query_params.get("resource_id")
        vm = (twin.find_vm(resource_id) if resource_id else None) or twin.find_vm(vm_id=key) or twin.find_vm(name=key)
        if vm is None:
            raise AdminError(404, f"no VM {resource_id or key!r}")
        return vm

    async def info(self, _: Request) -> Response:
        return JSONResponse(self.twin.info)

    async def list_vms(self, _: Request) -> Response:
        with self.twin.lock:
            vms = list(self.twin.vms.values())
        return JSONResponse({"value": [vm_summary(vm) for vm in vms]})

    async def create_vm(self, request: Request) -> Response:
        body = await _body(request)
        if not isinstance(body.get("name"), str):
            raise AdminError(400, "'name' is required")
        tags = body.get("tags") or {}
        if not isinstance(tags, dict):
            raise AdminError(400, "'tags' must be an object")
        try:
            vm = self.twin.create_vm(
                body["name"], resource_group=str(body.get("resource_group", "cvm-rg")),
                tee=TeeProfile(body.get("tee", TeeProfile.COMPLIANT_CVM.value)),
                os_type=str(body.get("os_type", "Linux")),
                identity=bool(body.get("identity", True)), tags={str(k): str(v) for k, v in tags.items()},
                location=body.get("location"), caller_principal_id=body.get("caller_principal_id"))
        except ValueError as exc:
            raise AdminError(400, str(exc)) from exc
        return JSONResponse(vm_summary(vm), status_code=201)

    async def get_vm(self, request: Request) -> Response:
        return JSONResponse(vm_summary(self._vm(request.path_params["key"], request)))

    async def delete_vm(self, request: Request) -> Response:
        vm = self._vm(request.path_params["key"], request)
        self.twin.delete_vm(vm.resource_id)
        return JSONResponse(vm_summary(vm))

    async def list_principals(self, _: Request) -> Response:
        with self.twin.lock:
            principals = list(self.twin.principals.values())
        return JSONResponse({"value": [principal_summary(p) for p in principals]})

    async def add_principal(self, request: Request) -> Response:
        body = await _body(request)
        name = body.get("display_name")
        if not isinstance(name, str) or not name:
            raise AdminError(400, "'display_name' is required")
        principal_type = str(body.get("principal_type", "ServicePrincipal"))
        if principal_type not in ("User", "Group", "ServicePrincipal"):
            raise AdminError(400, "'principal_type' must be User, Group or ServicePrincipal")
        principal = self.twin.add_principal(name, principal_type=principal_type, object_id=body.get("object_id"),
                                            replicated=bool(body.get("replicated", False)))
        if body.get("app_identity"):
            self.twin.identity.app_identities.append(principal.object_id)
        return JSONResponse(principal_summary(principal), status_code=201)

    async def grant(self, request: Request) -> Response:
        body = await _body(request)
        try:
            result = self.twin.grant(str(body["principal_id"]), str(body["role"]), str(body["scope"]),
                                     propagate=bool(body.get("propagate", False)))
        except KeyError as exc:
            raise AdminError(400, f"missing {exc}: principal_id, role and scope are required") from exc
        except ValueError as exc:
            raise AdminError(400, str(exc)) from exc
        return JSONResponse(result, status_code=201)

    async def role_assignments(self, _: Request) -> Response:
        rbac = self.twin.rbac
        with rbac.lock:
            live = [rbac.describe(a) for a in rbac.assignments.values()]
            revoked = [rbac.describe(a) for a in rbac.revoked]
        return JSONResponse({"value": live, "revoked": revoked})

    async def rbac_check(self, request: Request) -> Response:
        q = request.query_params
        missing = [k for k in ("principal_id", "action", "scope") if not q.get(k)]
        if missing:
            raise AdminError(400, f"missing query parameters: {', '.join(missing)}")
        decision = self.twin.rbac.check(q["principal_id"], q["action"], q["scope"],
                                        data_action=q.get("data_action", "false").lower() == "true")
        return JSONResponse({"allowed": decision.allowed, "reason": decision.reason,
                             "pending_until": decision.pending_until})

    async def propagation(self, request: Request) -> Response:
        rbac = self.twin.rbac
        if request.method == "PUT":
            body = await _body(request)
            try:
                rbac.model = PropagationModel.parse(str(body.get("spec", "")))
            except ValueError as exc:
                raise AdminError(400, str(exc)) from exc
        return JSONResponse(rbac.model.describe())

    async def token(self, request: Request) -> Response:
        body = await _body(request)
        try:
            token = self.twin.identity.mint_token(str(body["principal_id"]), str(body.get("audience",
                                                                                          "https://management.azure.com")))
        except KeyError as exc:
            raise AdminError(404 if "principal" in str(exc) and "unknown" in str(exc) else 400, str(exc)) from exc
        return JSONResponse({"access_token": token, "token_type": "Bearer"})

    async def faults(self, request: Request) -> Response:
        faults = self.twin.faults
        if request.method == "POST":
            body = await _body(request)
            settings = {**(body.get("match") or {}), **(body.get("params") or {})}
            try:
                fault = faults.add(str(body.get("kind")), rate=float(body.get("rate", 1.0)), count=body.get("count"),
                                   duration=body.get("duration_seconds"), **settings)
            except (ValueError, TypeError) as exc:
                raise AdminError(400, str(exc)) from exc
            return JSONResponse(fault.as_json(), status_code=201)
        if request.method == "DELETE":
            faults.clear()
            return Response(status_code=204)
        return JSONResponse({"value": [f.as_json() for f in faults.list()]})

    async def delete_fault(self, request: Request) -> Response:
        if not self.twin.faults.remove(request.path_params["fault_id"]):
            raise AdminError(404, f"no fault {request.path_params['fault_id']}")
        return Response(status_code=204)

    async def counters(self, request: Request) -> Response:
        counters = self.twin.counters
        if request.method == "DELETE":
            counters.reset()
            return Response(status_code=204)
        q = request.query_params
        keys = ("caller", "service", "operation")
        rows = [r for r in counters.rows() if all(q.get(k) is None or str(r[k]).lower() == q[k].lower() for k in keys)]
        return JSONResponse({"value": rows, "total": sum(r["count"] for r in rows)})

    async def clock(self, _: Request) -> Response:
        clock = self.twin.clock
        return JSONResponse({"kind": clock.kind, "now": clock.time(), "iso": clock.now().isoformat()})

    async def advance(self, request: Request) -> Response:
        clock = self.twin.clock
        if not isinstance(clock, VirtualClock):
            raise AdminError(409, f"only a virtual clock can be advanced; this twin runs a {clock.kind} clock")
        seconds = (await _body(request)).get("seconds")
        if not isinstance(seconds, int | float) or seconds < 0:
            raise AdminError(400, "'seconds' must be a non-negative number")
        clock.advance(float(seconds))
        return JSONResponse({"kind": clock.kind, "now": clock.time()})

    async def throttle(self, request: Request) -> Response:
        throttle = self.twin.throttle
        if request.method == "PUT":
            body = await _body(request)
            try:
                throttle.configure(enabled=body.get("enabled"),
                                   **{k: tuple(v) for k, v in body.items() if k in ("reads", "writes", "deletes")})
            except (ValueError, TypeError) as exc:
                raise AdminError(400, str(exc)) from exc
        return JSONResponse({"enabled": throttle.enabled, **{k: list(v) for k, v in throttle.limits.items()}})

    async def delivery(self, request: Request) -> Response:
        events = self.twin.events
        if request.method == "PUT":
            try:
                events.configure(**await _body(request))
            except (ValueError, TypeError) as exc:
                raise AdminError(400, str(exc)) from exc
        return JSONResponse({**events.config.as_json(), "validation": events.validation})

    async def events(self, _: Request) -> Response:
        events = self.twin.events
        with self.twin.lock:
            return JSONResponse({"emitted": list(events.emitted), "deliveries": list(events.deliveries),
                                 "validation": events.validation})

    async def published(self, _: Request) -> Response:
        with self.twin.lock:
            return JSONResponse({"value": list(self.twin.events.published)})

    async def topic(self, _: Request) -> Response:
        twin = self.twin
        return JSONResponse({"endpoint": twin.urls.events, "resource_id": twin.topic_resource_id,
                             "key": twin.events.topic_key})

    async def event_control(self, request: Request) -> Response:
        events, action = self.twin.events, request.path_params["action"]
        body = await _body(request)
        try:
            if action == "hold":
                events.hold()
                return JSONResponse({"held": True})
            if action == "release":
                return JSONResponse({"released": events.release(str(body.get("order", "fifo")))})
            count = int(body.get("count", 1))
            if count < 1:
                raise ValueError("'count' must be >= 1")
            if action == "drop-next":
                events.drop_next(count)
            elif action == "duplicate-next":
                events.duplicate_next(count)
            else:
                raise AdminError(404, f"unknown event action {action!r}")
        except ValueError as exc:
            raise AdminError(400, str(exc)) from exc
        return JSONResponse({action: count})

    async def validate(self, request: Request) -> Response:
        if not self.twin.events.manual_validation(request.query_params.get("code", "")):
            return PlainTextResponse("Invalid or expired validation code.", status_code=400)
        return PlainTextResponse("Webhook successfully validated as a part of the subscription validation process.")

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/admin/info", self.info, methods=["GET"]),
            Route("/admin/vms", self.list_vms, methods=["GET"]),
            Route("/admin/vms", self.create_vm, methods=["POST"]),
            Route("/admin/vms/{key}", self.get_vm, methods=["GET"]),
            Route("/admin/vms/{key}", self.delete_vm, methods=["DELETE"]),
            Route("/admin/principals", self.list_principals, methods=["GET"]),
            Route("/admin/principals", self.add_principal, methods=["POST"]),
            Route("/admin/grants", self.grant, methods=["POST"]),
            Route("/admin/role-assignments", self.role_assignments, methods=["GET"]),
            Route("/admin/rbac/check", self.rbac_check, methods=["GET"]),
            Route("/admin/propagation", self.propagation, methods=["GET", "PUT"]),
            Route("/admin/tokens", self.token, methods=["POST"]),
            Route("/admin/faults", self.faults, methods=["GET", "POST", "DELETE"]),
            Route("/admin/faults/{fault_id}", self.delete_fault, methods=["DELETE"]),
            Route("/admin/counters", self.counters, methods=["GET", "DELETE"]),
            Route("/admin/clock", self.clock, methods=["GET"]),
            Route("/admin/clock/advance", self.advance, methods=["POST"]),
            Route("/admin/throttle", self.throttle, methods=["GET", "PUT"]),
            Route("/admin/events", self.events, methods=["GET"]),
            Route("/admin/events/delivery", self.delivery, methods=["GET", "PUT"]),
            Route("/admin/events/published", self.published, methods=["GET"]),
            Route("/admin/events/topic", self.topic, methods=["GET"]),
            Route("/admin/events/validate", self.validate, methods=["GET"]),
            Route("/admin/events/{action}", self.event_control, methods=["POST"]),
        ]


def routes(twin: Twin) -> list[BaseRoute]:
    return AdminApi(twin).routes()
