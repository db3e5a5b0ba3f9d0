"""ARM Microsoft.Authorization (2022-04-01): role definitions and role assignments.

The store and evaluation live in :mod:`localdev.twin.rbac`; this module is the REST contract,
including the errors the app must cope with (RoleAssignmentExists, PrincipalNotFound, ...).
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from localdev.twin.arm import page, require_api_version, require_subscription
from localdev.twin.http import arm_fail, ci_route, query_param, read_json
from localdev.twin.model import Principal
from localdev.twin.rbac import RoleAssignment, RoleDefinition, iso, role_guid_of
from localdev.twin.resource_ids import normalize_scope, scope_covers, subscription_of

if TYPE_CHECKING:
    from localdev.twin.core import Twin

_GUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal", "ForeignGroup", "Device")
_RA = "Microsoft.Authorization/roleAssignments"
_RD = "Microsoft.Authorization/roleDefinitions"


def _scope_of(request: Request) -> str:
    raw = request.path_params.get("scope", "")
    return "/" + raw.strip("/") if raw else "/"


def _check_scope(twin: Twin, scope: str) -> None:
    sub = subscription_of(scope)
    if sub is None:
        raise arm_fail(400, "InvalidScope", f"The scope '{scope}' is not valid for this request: it must be a "
                       "subscription or lie below one.")
    require_subscription(twin, sub)


def _bad_request(message: str) -> Exception:
    return arm_fail(400, "InvalidRequestContent", message)


def _parse_filter(raw: str | None) -> dict[str, Any]:
    """``atScope()``, ``principalId eq '…'``, ``assignedTo('…')``, ``roleName eq '…'``, ``type eq '…'``."""
    result: dict[str, Any] = {}
    if not raw:
        return result
    for part in re.split(r"\s+and\s+", raw.strip(), flags=re.IGNORECASE):
        clause = part.strip()
        if re.fullmatch(r"atScope\(\)", clause, re.IGNORECASE):
            result["at_scope"] = True
        elif re.fullmatch(r"atScopeAndBelow\(\)", clause, re.IGNORECASE):
            result["at_scope_and_below"] = True
        elif m := re.fullmatch(r"(principalId|roleName|type)\s+eq\s+'([^']*)'", clause, re.IGNORECASE):
            result[m[1].lower()] = m[2]
        elif m := re.fullmatch(r"assignedTo\('([^']*)'\)", clause, re.IGNORECASE):
            result["principalid"] = m[1]
        else:
            raise arm_fail(400, "UnsupportedQuery", f"The filter '{clause}' is not supported. Supported filters are "
                           "either 'atScope()' or 'principalId eq '{value}'' or 'assignedTo('{value}')'.")
    return result


def _dashed(guid: str) -> str:
    return str(uuid.UUID(guid)).lower()


class AuthorizationApi:
    def __init__(self, twin: Twin) -> None:
        self.twin = twin

    def _begin(self, request: Request, action: str) -> tuple[str, Principal]:
        """The ARM front door of a scoped call: api-version, subscription, then auth and RBAC."""
        require_api_version(request)
        scope = _scope_of(request)
        _check_scope(self.twin, scope)
        return scope, self.twin.arm_call(request, action, scope)

    # ------------------------------------------------------------------ role assignments
    async def put_assignment(self, request: Request) -> Response:
        twin = self.twin
        scope, caller = self._begin(request, f"{_RA}/write")
        name = request.path_params["name"]
        if not _GUID.match(name):
            raise arm_fail(400, "InvalidRoleAssignmentId", f"The role assignment ID '{name}' is not valid. The role "
                           "assignment ID must be a GUID.")
        body = await read_json(request, _bad_request)
        props = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(props, dict):
            raise _bad_request("The request body must contain a 'properties' object.")
        role_definition_id = props.get("roleDefinitionId")
        principal_id = props.get("principalId")
        principal_type = props.get("principalType")
        if not isinstance(role_definition_id, str) or not role_definition_id:
            raise _bad_request("The 'properties.roleDefinitionId' property is required.")
        if not isinstance(principal_id, str) or not _GUID.match(principal_id):
            raise arm_fail(400, "InvalidPrincipalId", "A valid principal ID must be provided for role assignment.")
        principal_id = _dashed(principal_id)
        if principal_type is not None and principal_type not in PRINCIPAL_TYPES:
            raise _bad_request(f"The principal type '{principal_type}' is not valid. Allowed values: "
                               f"{', '.join(PRINCIPAL_TYPES)}.")
        definition = twin.rbac.find_definition(role_guid_of(role_definition_id))
        if definition is None or not _GUID.match(role_guid_of(role_definition_id)):
            raise arm_fail(404, "RoleDefinitionDoesNotExist", "The specified role definition with ID "
                           f"'{role_guid_of(role_definition_id)}' does not exist.")
        with twin.rbac.lock:
            existing = twin.rbac.assignments.get(name.lower())
            if existing is not None:
                same = (existing.principal_id == principal_id and existing.role_guid == definition.guid
                        and normalize_scope(existing.scope) == normalize_scope(scope))
                if not same:
                    raise arm_fail(400, "RoleAssignmentUpdateNotPermitted", "Tenant ID, application ID, principal ID, "
                                   "and scope are not allowed to be updated.")
                return JSONResponse(existing.as_arm(), status_code=200)
            for other in twin.rbac.assignments.values():
                if (other.principal_id == principal_id and other.role_guid == definition.guid
                        and normalize_scope(other.scope) == normalize_scope(scope)):
                    raise arm_fail(409, "RoleAssignmentExists", "The role assignment already exists. The ID of the "
                                   f"existing role assignment is {other.name.replace('-', '')}.")
        actual_type = self._principal_gate(principal_id, principal_type)
        now = twin.clock.time()
        assignment = RoleAssignment(
            name=name.lower(), scope=scope, role_definition_id=role_definition_id, role_guid=definition.guid,
            principal_id=principal_id, principal_type=principal_type or actual_type, created_at=now,
            effective_at=now + twin.rbac.draw_delay(name), created_by=caller.object_id,
            description=props.get("description"), condition=props.get("condition"),
            condition_version=props.get("conditionVersion"),
            delegated_managed_identity_resource_id=props.get("delegatedManagedIdentityResourceId"))
        twin.rbac.add_assignment(assignment)
        twin.events.arm_event(request, "Microsoft.Resources.ResourceWriteSuccess", assignment.resource_id,
                              f"{_RA}/write", caller, created=True)
        return JSONResponse(assignment.as_arm(), status_code=201)

    def _principal_gate(self, principal_id: str, principal_type: str | None) -> str:
        """PrincipalNotFound while Entra replicates (skipped when principalType is given, like ARM)."""
        twin = self.twin
        fault = twin.faults.active("principal_not_found", principal_id=principal_id)
        principal = twin.principal(principal_id)
        replicated = principal is not None and (
            twin.clock.time() >= principal.created_at + twin.config.principal_replication_seconds)
        if fault is not None or (principal_type is None and not replicated):
            raise arm_fail(400, "PrincipalNotFound", f"Principal {principal_id.replace('-', '')} does not exist in the "
                           f"directory {twin.config.tenant_id}. Check that you have the correct principal ID. If you "
                           "are creating this principal and then immediately assigning a role, this error might be "
                           "related to a replication delay. In this case, set the role assignment principalType "
                           "property to a value, such as ServicePrincipal, User, or Group.  See "
                           "https://aka.ms/docs-principaltype")
        if principal is not None and replicated and principal_type and principal_type != principal.principal_type:
            raise arm_fail(400, "UnmatchedPrincipalType", f"The PrincipalId '{principal_id.replace('-', '')}' has type "
                           f"'{principal.principal_type}' , which is different from specified PrincipalType "
                           f"'{principal_type}'.")
        return principal.principal_type if principal is not None else "ServicePrincipal"

    def _find_assignment(self, scope: str, name: str) -> RoleAssignment | None:
        assignment = self.twin.rbac.assignments.get(name.lower())
        if assignment is None or normalize_scope(assignment.scope) != normalize_scope(scope):
            return None
        return assignment

    async def get_assignment(self, request: Request) -> Response:
        scope, _ = self._begin(request, f"{_RA}/read")
        name = request.path_params["name"]
        assignment = self._find_assignment(scope, name)
        if assignment is None:
            raise arm_fail(404, "RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")
        return JSONResponse(assignment.as_arm())

    async def delete_assignment(self, request: Request) -> Response:
        twin = self.twin
        scope, caller = self._begin(request, f"{_RA}/delete")
        name = request.path_params["name"]
        with twin.rbac.lock:
            assignment = self._find_assignment(scope, name)
            if assignment is None:
                return Response(status_code=204)
            twin.rbac.remove_assignment(assignment.name)
        twin.events.arm_event(request, "Microsoft.Resources.ResourceDeleteSuccess", assignment.resource_id,
                              f"{_RA}/delete", caller)
        return JSONResponse(assignment.as_arm(), status_code=200)

    async def list_assignments(self, request: Request) -> Response:
        twin = self.twin
        scope, _ = self._begin(request, f"{_RA}/read")
        filters = _parse_filter(query_param(request, "$filter"))
        principal = filters.get("principalid")
        if principal:
            principal = _dashed(principal) if _GUID.match(principal) else principal.lower()
        with twin.rbac.lock:
            items = sorted(twin.rbac.assignments.values(), key=lambda a: (a.created_at, a.name))
        selected = []
        for a in items:
            above = scope_covers(a.scope, scope)
            below = scope_covers(scope, a.scope)
            if filters.get("at_scope") and not above:
                continue
            if not (above or below):
                continue
            if principal and a.principal_id != principal:
                continue
            selected.append(a.as_arm())
        return JSONResponse(page(request, selected, twin.config.arm_page_size))

    # ------------------------------------------------------------------ role definitions
    def _definition_sub(self, scope: str) -> str | None:
        return subscription_of(scope)

    def _read_scope(self, scope: str) -> str:
        """Role definitions read at the root ("/providers/...") are authorised at the subscription."""
        return scope if scope != "/" else f"/subscriptions/{self.twin.config.subscription_id}"

    async def put_definition(self, request: Request) -> Response:
        twin = self.twin
        scope, caller = self._begin(request, f"{_RD}/write")
        guid = request.path_params["guid"].lower()
        if not _GUID.match(guid):
            raise arm_fail(400, "InvalidRoleDefinitionId", f"The role definition ID '{guid}' is not valid. It must be "
                           "a GUID.")
        guid = _dashed(guid)
        body = await read_json(request, _bad_request)
        props = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(props, dict):
            raise _bad_request("The request body must contain a 'properties' object.")
        role_name = props.get("roleName")
        if not isinstance(role_name, str) or not role_name.strip():
            raise _bad_request("The 'properties.roleName' property is required.")
        scopes = props.get("assignableScopes")
        if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) and s for s in scopes):
            raise _bad_request("The 'properties.assignableScopes' property must be a non-empty list of scopes.")
        permissions = self._permissions(props.get("permissions"))
        if props.get("type", "CustomRole") not in ("CustomRole", "customrole"):
            raise _bad_request("Only roles of type 'CustomRole' can be created or updated.")
        for assignable in scopes:
            _check_scope(twin, assignable)
            if not twin.rbac.check(caller.object_id, f"{_RD}/write", assignable, data_action=False):
                raise arm_fail(403, "AuthorizationFailed", f"The client '{caller.display_name}' with object id "
                               f"'{caller.object_id}' does not have authorization to perform action '{_RD}/write' "
                               f"over scope '{assignable}' or the scope is invalid.")
        now = iso(twin.clock.time())
        with twin.rbac.lock:
            current = twin.rbac.definitions.get(guid)
            if current is not None and current.role_type == "BuiltInRole":
                raise arm_fail(403, "RoleDefinitionUpdateNotPermitted",
                               f"The built-in role definition '{guid}' cannot be modified.")
            for other in twin.rbac.definitions.values():
                if other.guid != guid and other.role_name.lower() == role_name.strip().lower():
                    raise arm_fail(409, "RoleDefinitionWithSameNameExists",
                                   "A custom role with the same name already exists in this directory. Use a "
                                   "different name.")
            definition = RoleDefinition(
                guid=guid, role_name=role_name.strip(), description=str(props.get("description") or ""),
                role_type="CustomRole", permissions=permissions, assignable_scopes=list(scopes),
                created_on=current.created_on if current else now, updated_on=now,
                created_by=current.created_by if current else caller.object_id, updated_by=caller.object_id)
            twin.rbac.definitions[guid] = definition
        resource_id = definition.resource_id(self._definition_sub(scope))
        twin.events.arm_event(request, "Microsoft.Resources.ResourceWriteSuccess", resource_id, f"{_RD}/write",
                              caller, created=current is None)
        return JSONResponse(definition.as_arm(self._definition_sub(scope)), status_code=201)

    @staticmethod
    def _permissions(raw: Any) -> list[dict[str, list[str]]]:
        if not isinstance(raw, list) or not raw:
            raise _bad_request("The 'properties.permissions' property must be a non-empty list.")
        result = []
        for item in raw:
            if not isinstance(item, dict):
                raise _bad_request("Each permission must be an object.")
            perm: dict[str, list[str]] = {}
            for key in ("actions", "notActions", "dataActions", "notDataActions"):
                values = item.get(key) or []
                if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
                    raise _bad_request(f"'permissions.{key}' must be a list of non-empty strings.")
                perm[key] = list(values)
            if not perm["actions"] and not perm["dataActions"]:
                raise _bad_request("A role definition must grant at least one action or data action.")
            result.append(perm)
        return result

    def _find_definition(self, scope: str, guid: str) -> RoleDefinition | None:
        definition = self.twin.rbac.definitions.get(guid.lower())
        if definition is None:
            return None
        if definition.role_type == "CustomRole" and scope != "/" and not any(
                scope_covers(s, scope) or scope_covers(scope, s) for s in definition.assignable_scopes):
            return None
        return definition

    async def get_definition(self, request: Request) -> Response:
        twin = self.twin
        require_api_version(request)
        scope, guid = _scope_of(request), request.path_params["guid"]
        if scope != "/":
            _check_scope(twin, scope)
        twin.arm_call(request, f"{_RD}/read", self._read_scope(scope))
        definition = self._find_definition(scope, guid)
        if definition is None:
            raise arm_fail(404, "RoleDefinitionDoesNotExist", f"The specified role definition with ID '{guid}' does "
                           "not exist.")
        return JSONResponse(definition.as_arm(self._definition_sub(scope)))

    async def delete_definition(self, request: Request) -> Response:
        twin = self.twin
        scope, caller = self._begin(request, f"{_RD}/delete")
        guid = request.path_params["guid"].lower()
        with twin.rbac.lock:
            definition = self._find_definition(scope, guid)
            if definition is None:
                return Response(status_code=204)
            if definition.role_type == "BuiltInRole":
                raise arm_fail(403, "RoleDefinitionUpdateNotPermitted",
                               f"The built-in role definition '{guid}' cannot be deleted.")
            if any(a.role_guid == definition.guid for a in twin.rbac.assignments.values()):
                raise arm_fail(409, "RoleDefinitionHasAssignments", "There are existing role assignments referencing "
                               "role (code: RoleDefinitionHasAssignments).")
            del twin.rbac.definitions[definition.guid]
        twin.events.arm_event(request, "Microsoft.Resources.ResourceDeleteSuccess",
                              definition.resource_id(self._definition_sub(scope)), f"{_RD}/delete", caller)
        return JSONResponse(definition.as_arm(self._definition_sub(scope)), status_code=200)

    async def list_definitions(self, request: Request) -> Response:
        twin = self.twin
        require_api_version(request)
        scope = _scope_of(request)
        if scope != "/":
            _check_scope(twin, scope)
        twin.arm_call(request, f"{_RD}/read", self._read_scope(scope))
        filters = _parse_filter(query_param(request, "$filter"))
        below = filters.get("at_scope_and_below", False)
        with twin.rbac.lock:
            definitions = sorted(twin.rbac.definitions.values(), key=lambda d: (d.role_type, d.role_name))
        selected = []
        for d in definitions:
            if "rolename" in filters and d.role_name.lower() != filters["rolename"].lower():
                continue
            if "type" in filters and d.role_type.lower() != filters["type"].lower():
                continue
            if d.role_type == "CustomRole" and scope != "/" and not any(
                    scope_covers(s, scope) or (below and scope_covers(scope, s)) for s in d.assignable_scopes):
                continue
            selected.append(d.as_arm(self._definition_sub(scope)))
        return JSONResponse(page(request, selected, twin.config.arm_page_size))

    def routes(self) -> list[BaseRoute]:
        ra = "providers/Microsoft.Authorization/roleAssignments"
        rd = "providers/Microsoft.Authorization/roleDefinitions"
        return [
            ci_route(f"/{rd}/{{guid}}", self.get_definition, ["GET"]),
            ci_route(f"/{rd}", self.list_definitions, ["GET"]),
            ci_route(f"/{{scope:path}}/{ra}/{{name}}", self.get_assignment, ["GET"]),
            ci_route(f"/{{scope:path}}/{ra}/{{name}}", self.put_assignment, ["PUT"]),
            ci_route(f"/{{scope:path}}/{ra}/{{name}}", self.delete_assignment, ["DELETE"]),
            ci_route(f"/{{scope:path}}/{ra}", self.list_assignments, ["GET"]),
            ci_route(f"/{{scope:path}}/{rd}/{{guid}}", self.get_definition, ["GET"]),
            ci_route(f"/{{scope:path}}/{rd}/{{guid}}", self.put_definition, ["PUT"]),
            ci_route(f"/{{scope:path}}/{rd}/{{guid}}", self.delete_definition, ["DELETE"]),
            ci_route(f"/{{scope:path}}/{rd}", self.list_definitions, ["GET"]),
        ]


def routes(twin: Twin) -> list[BaseRoute]:
    return AuthorizationApi(twin).routes()
