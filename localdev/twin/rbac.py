"""Azure RBAC for the twin: role definitions, assignments, evaluation and propagation delay.

Every new assignment becomes effective at ``created + delay``, the delay drawn (seeded) from a
:class:`PropagationModel`; a deleted one keeps granting for a fresh delay. ARM reads see changes
at once: only *enforcement* lags, as in Azure.
"""

from __future__ import annotations

import bisect
import datetime as dt
import random
import re
import threading
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from localdev.twin import roles
from localdev.twin.resource_ids import normalize_scope, scope_covers

if TYPE_CHECKING:
    from localdev.twin.core import Twin

# (quantile, seconds): median 30 s, p95 3 min, max 10 min (Azure documents "up to 10 minutes").
EMPIRICAL_POINTS: tuple[tuple[float, float], ...] = (
    (0.0, 2.0), (0.25, 12.0), (0.5, 30.0), (0.75, 75.0), (0.9, 140.0), (0.95, 180.0), (0.99, 420.0), (1.0, 600.0),
)
ROLE_DEFINITION_PATH = "/providers/Microsoft.Authorization/roleDefinitions/"


@dataclass(frozen=True)
class PropagationModel:
    """Delay between an assignment's creation and its enforcement: fixed, uniform or empirical."""

    kind: str = "empirical"
    params: tuple[float, ...] = ()
    points: tuple[tuple[float, float], ...] = EMPIRICAL_POINTS

    @classmethod
    def fixed(cls, seconds: float) -> PropagationModel:
        return cls("fixed", (float(seconds),))

    @classmethod
    def uniform(cls, low: float, high: float) -> PropagationModel:
        if high < low:
            raise ValueError(f"uniform propagation needs low <= high, got {low} > {high}")
        return cls("uniform", (float(low), float(high)))

    @classmethod
    def empirical(cls, points: tuple[tuple[float, float], ...] = EMPIRICAL_POINTS) -> PropagationModel:
        qs = [q for q, _ in points]
        if qs != sorted(qs) or qs[0] != 0.0 or qs[-1] != 1.0 or [s for _, s in points] != sorted(s for _, s in points):
            raise ValueError("empirical points must rise from quantile 0 to 1 with non-decreasing seconds")
        return cls("empirical", (), tuple(points))

    @classmethod
    def parse(cls, spec: str) -> PropagationModel:
        """``fixed:30``, ``uniform:5:60``, ``empirical`` or ``empirical:0:1,0.5:20,1:90``."""
        kind, _, rest = spec.strip().partition(":")
        try:
            if kind == "fixed":
                return cls.fixed(float(rest))
            if kind == "uniform":
                low, high = rest.split(":")
                return cls.uniform(float(low), float(high))
            if kind == "empirical":
                if not rest:
                    return cls.empirical()
                pairs = [item.split(":") for item in rest.split(",")]
                return cls.empirical(tuple((float(q), float(s)) for q, s in pairs))
        except ValueError as exc:
            raise ValueError(f"bad propagation spec {spec!r}: {exc}") from exc
        raise ValueError(f"bad propagation spec {spec!r}: expected fixed:S, uniform:LOW:HIGH or empirical[:q:s,...]")

    def draw(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.params[0]
        if self.kind == "uniform":
            return rng.uniform(self.params[0], self.params[1])
        u = rng.random()
        qs = [q for q, _ in self.points]
        i = max(1, bisect.bisect_right(qs, u))
        (q0, s0), (q1, s1) = self.points[i - 1], self.points[min(i, len(self.points) - 1)]
        return s0 if q1 == q0 else s0 + (s1 - s0) * (u - q0) / (q1 - q0)

    def describe(self) -> dict[str, Any]:
        if self.kind == "empirical":
            return {"kind": "empirical", "points": [list(p) for p in self.points]}
        return {"kind": self.kind, "params": list(self.params)}


@dataclass
class RoleDefinition:
    guid: str
    role_name: str
    description: str
    role_type: str  # BuiltInRole | CustomRole
    permissions: list[dict[str, list[str]]]
    assignable_scopes: list[str]
    created_on: str = ""
    updated_on: str = ""
    created_by: str | None = None
    updated_by: str | None = None

    def resource_id(self, subscription_id: str | None) -> str:
        prefix = f"/subscriptions/{subscription_id}" if subscription_id else ""
        return f"{prefix}{ROLE_DEFINITION_PATH}{self.guid}"

    def as_arm(self, subscription_id: str | None) -> dict[str, Any]:
        return {
            "id": self.resource_id(subscription_id),
            "name": self.guid,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": self.role_name,
                "type": self.role_type,
                "description": self.description,
                "assignableScopes": self.assignable_scopes,
                "permissions": self.permissions,
                "createdOn": self.created_on,
                "updatedOn": self.updated_on,
                "createdBy": self.created_by,
                "updatedBy": self.updated_by,
            },
        }

    def grants(self, action: str, data_action: bool) -> bool:
        allow_key, deny_key = ("dataActions", "notDataActions") if data_action else ("actions", "notActions")
        allowed = any(_matches(p, action) for perm in self.permissions for p in perm.get(allow_key, []))
        denied = any(_matches(p, action) for perm in self.permissions for p in perm.get(deny_key, []))
        return allowed and not denied


@dataclass
class RoleAssignment:
    name: str  # GUID
    scope: str  # as created
    role_definition_id: str  # as sent by the client
    role_guid: str
    principal_id: str
    principal_type: str
    created_at: float
    effective_at: float  # twin-clock time from which RBAC enforces it
    created_by: str | None = None
    description: str | None = None
    condition: str | None = None
    condition_version: str | None = None
    delegated_managed_identity_resource_id: str | None = None
    revoked_at: float | None = None  # deleted (ARM no longer shows it)
    revoke_effective_at: float | None = None  # enforcement stops here
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resource_id(self) -> str:
        return f"{self.scope.rstrip('/')}/providers/Microsoft.Authorization/roleAssignments/{self.name}"

    def as_arm(self) -> dict[str, Any]:
        created = iso(self.created_at)
        return {
            "id": self.resource_id,
            "name": self.name,
            "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "scope": self.scope,
                "roleDefinitionId": self.role_definition_id,
                "principalId": self.principal_id,
                "principalType": self.principal_type,
                "description": self.description,
                "condition": self.condition,
                "conditionVersion": self.condition_version,
                "createdOn": created,
                "updatedOn": created,
                "createdBy": self.created_by,
                "updatedBy": self.created_by,
                "delegatedManagedIdentityResourceId": self.delegated_managed_identity_resource_id,
            },
        }

    def enforced(self, now: float) -> bool:
        if now < self.effective_at:
            return False
        return self.revoke_effective_at is None or now < self.revoke_effective_at


@dataclass
class Decision:
    """Outcome of an RBAC check: ``allowed`` plus a human-readable ``reason``."""

    allowed: bool
    reason: str
    assignment: RoleAssignment | None = None
    role: RoleDefinition | None = None
    pending_until: float | None = None  # a matching assignment exists but has not propagated yet

    def __bool__(self) -> bool:
        return self.allowed


@lru_cache(maxsize=4096)
def _pattern(permission: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(permission).replace(r"\*", ".*") + "$", re.IGNORECASE)


def _matches(permission: str, action: str) -> bool:
    return _pattern(permission).match(action) is not None


def iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def role_guid_of(role_definition_id: str) -> str:
    return role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


class Rbac:
    def __init__(self, twin: Twin) -> None:
        self._twin = twin
        self.lock = threading.RLock()
        self.definitions: dict[str, RoleDefinition] = {}
        self.assignments: dict[str, RoleAssignment] = {}  # lower-case name -> live assignment
        self.revoked: list[RoleAssignment] = []  # deleted, still enforced until revoke_effective_at
        self.model: PropagationModel = twin.config.propagation_model
        for role in roles.BUILT_IN_ROLES:
            self.definitions[role["guid"]] = RoleDefinition(
                guid=role["guid"], role_name=role["roleName"], description=role["description"],
                role_type="BuiltInRole", permissions=role["permissions"], assignable_scopes=["/"],
                created_on="2020-01-01T00:00:00.0000000Z", updated_on="2024-01-01T00:00:00.0000000Z")

    # --------------------------------------------------------------------------- seeding
    def seed_default_roles(self) -> None:
        """The app identity's least-privilege grants and the operator's Owner, effective at once."""
        twin, cfg = self._twin, self._twin.config
        sub_scope = f"/subscriptions/{cfg.subscription_id}"
        operator_role = str(uuid.uuid5(uuid.NAMESPACE_URL, f"skr-twin-operator-role/{cfg.subscription_id}"))
        now_iso = iso(twin.clock.time())
        self.definitions[operator_role] = RoleDefinition(
            guid=operator_role, role_name="SKR Orchestrator Operator",
            description="Twin-defined least-privilege role for the SKR Orchestrator app: read VMs, run commands, "
                        "read role assignments and definitions.",
            role_type="CustomRole",
            permissions=[{"actions": roles.app_operator_actions(cfg.app_may_write_role_definitions),
                          "notActions": [], "dataActions": [], "notDataActions": []}],
            assignable_scopes=[sub_scope], created_on=now_iso, updated_on=now_iso)
        self.app_operator_role = operator_role
        app = twin.app_principal.object_id
        self.grant(app, operator_role, sub_scope)
        for vault in twin.vaults.values():
            self.grant(app, roles.RBAC_ADMIN, vault.resource_id)
            self.grant(app, roles.KV_CRYPTO_OFFICER, vault.resource_id)
        self.grant(app, roles.EVENTGRID_DATA_SENDER, twin.topic_resource_id)
        operator = twin.operator_principal.object_id
        self.grant(operator, roles.OWNER, sub_scope)
        self.grant(operator, roles.KV_ADMIN, sub_scope)
        self.grant(operator, roles.EVENTGRID_DATA_SENDER, sub_scope)

    # ----------------------------------------------------------------------- definitions
    def find_definition(self, role: str) -> RoleDefinition | None:
        """By GUID, full id or (case-insensitive) role name."""
        with self.lock:
            guid = role_guid_of(role)
            if guid in self.definitions:
                return self.definitions[guid]
            return next((d for d in self.definitions.values() if d.role_name.lower() == role.lower()), None)

    # ----------------------------------------------------------------------- assignments
    def draw_delay(self, key: str | None = None) -> float:
        """A propagation delay. Keyed draws (by assignment name) repeat for the same seed whatever
        order concurrent onboardings create their assignments in."""
        if key is not None:
            return max(0.0, self.model.draw(random.Random(f"{self._twin.config.seed}:{key.lower()}")))
        with self.lock:
            return max(0.0, self.model.draw(self._twin.rng))

    def add_assignment(self, assignment: RoleAssignment) -> None:
        with self.lock:
            self.assignments[assignment.name.lower()] = assignment

    def grant(self, principal_id: str, role: str, scope: str, *, propagate: bool = False,
              name: str | None = None) -> dict[str, Any]:
        definition = self.find_definition(role)
        if definition is None:
            raise ValueError(f"unknown role {role!r}")
        principal = self._twin.principal(principal_id)
        now = self._twin.clock.time()
        assignment = RoleAssignment(
            name=name or str(uuid.uuid4()), scope=scope, role_guid=definition.guid,
            role_definition_id=definition.resource_id(self._twin.config.subscription_id),
            principal_id=principal_id.lower(),
            principal_type=principal.principal_type if principal else "ServicePrincipal",
            created_at=now, effective_at=now + (self.draw_delay() if propagate else 0.0), created_by="twin-admin")
        self.add_assignment(assignment)
        return self.describe(assignment)

    def remove_assignment(self, name: str, *, propagate: bool = True) -> RoleAssignment | None:
        with self.lock:
            assignment = self.assignments.pop(name.lower(), None)
            if assignment is None:
                return None
            now = self._twin.clock.time()
            assignment.revoked_at = now
            assignment.revoke_effective_at = max(now, assignment.effective_at) + (
                self.draw_delay() if propagate else 0.0)
            self.revoked.append(assignment)
            return assignment

    def describe(self, assignment: RoleAssignment) -> dict[str, Any]:
        """An assignment as the admin API shows it (ARM body + enforcement times)."""
        body = assignment.as_arm()
        body["twin"] = {"effectiveAt": assignment.effective_at, "effectiveAtIso": iso(assignment.effective_at),
                        "revokedAt": assignment.revoked_at, "revokeEffectiveAt": assignment.revoke_effective_at}
        return body

    # ------------------------------------------------------------------------ evaluation
    def check(self, principal_id: str, action: str, scope: str, *, data_action: bool) -> Decision:
        """Is ``action`` allowed for ``principal_id`` at ``scope`` *now*, as RBAC enforces it?"""
        now = self._twin.clock.time()
        pending: list[tuple[float, RoleAssignment, RoleDefinition]] = []
        with self.lock:
            candidates = list(self.assignments.values()) + [
                a for a in self.revoked if a.revoke_effective_at is not None and a.revoke_effective_at > now]
            for assignment in candidates:
                if assignment.principal_id != principal_id.lower() or not scope_covers(assignment.scope, scope):
                    continue
                definition = self.definitions.get(assignment.role_guid)
                if definition is None or not definition.grants(action, data_action):
                    continue
                if assignment.enforced(now):
                    return Decision(True, f"granted by '{definition.role_name}' through assignment "
                                          f"{assignment.name} at scope '{assignment.scope}'", assignment, definition)
                if now < assignment.effective_at:
                    pending.append((assignment.effective_at, assignment, definition))
        if pending:
            due, assignment, definition = min(pending, key=lambda item: item[0])
            return Decision(False, f"assignment {assignment.name} ('{definition.role_name}') has not propagated yet: "
                                   f"effective in {due - now:.1f} s", assignment, definition, pending_until=due)
        return Decision(False, f"no role assignment grants '{action}' at '{normalize_scope(scope)}'")
