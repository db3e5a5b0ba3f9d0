"""The release role and its key-scope assignments to VM identities.

Every write is idempotent: the custom role and each assignment have deterministic ids, a PUT of
the same assignment is a no-op, and ``RoleAssignmentExists`` (the same grant under another name)
resolves to the existing assignment instead of failing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import (
    Permission,
    RoleAssignmentCreateParameters,
    RoleDefinition,
)

from skr.clients import ClientFactory
from skr.errors import Operation, SkrError, classify
from skr.models import (
    AssignmentRef,
    FailureCode,
    KeyRef,
    OffboardingRequest,
    OffboardingResult,
    ResourceIdError,
    RoleAssignmentId,
    RoleDefinitionId,
    RoleRef,
    VaultResourceId,
)
from skr.naming import NamingError, role_assignment_name
from skr.settings import BUILTIN_RELEASE_ROLE_ID, RELEASE_DATA_ACTION, RoleMode, Settings

BUILTIN_RELEASE_ROLE_NAME = "Key Vault Crypto Service Release User"
CUSTOM_ROLE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:skr-orchestrator:custom-release-role")
"""Fixed namespace of the custom role's GUID; changing it would orphan the existing role."""
CUSTOM_ROLE_DESCRIPTION = "Release keys to Confidential VMs (Secure Key Release); created by SKR Orchestrator"
ASSIGNMENT_DESCRIPTION = "SKR Orchestrator: Secure Key Release for the VM identity"


def custom_role_guid(subscription_id: str, role_name: str) -> str:
    """The same subscription and role name always give the same role id (retries re-PUT, never duplicate)."""
    return str(uuid.uuid5(CUSTOM_ROLE_NAMESPACE, f"{subscription_id.lower()}|{role_name.strip().lower()}"))


class RbacService:
    def __init__(self, factory: ClientFactory, settings: Settings) -> None:
        self._factory = factory
        self._settings = settings

    @property
    def vault(self) -> VaultResourceId:
        vault = self._settings.vault_resource_id
        if vault is None:
            raise SkrError.of(
                FailureCode.INVALID_REQUEST,
                "SKR_VAULT_RESOURCE_ID is not set: release-role assignments live at key scopes of that vault",
                operation=Operation.ROLE_DEFINITION,
            )
        return vault

    def _client(self) -> AuthorizationManagementClient:
        return self._factory.authorization(self.vault.subscription_id)

    # ------------------------------------------------------------------------------ role
    def ensure_release_role(self) -> RoleRef:
        """The built-in release role, or the custom one (created or repaired) when configured."""
        subscription = self.vault.subscription_id
        if self._settings.role_mode is RoleMode.BUILTIN:
            return RoleRef(
                role_definition_id=RoleDefinitionId.at_subscription(subscription, BUILTIN_RELEASE_ROLE_ID),
                role_name=BUILTIN_RELEASE_ROLE_NAME,
                custom=False,
            )
        return self._ensure_custom_role()

    def _ensure_custom_role(self) -> RoleRef:
        name = self._settings.custom_role_name
        scope = f"/subscriptions/{self.vault.subscription_id}"
        guid = custom_role_guid(self.vault.subscription_id, name)
        definitions = self._client().role_definitions
        try:
            existing = definitions.get(scope, guid)
        except ResourceNotFoundError:
            existing = None
        if existing is not None and self._suitable(existing):
            return self._role_ref(existing)
        body = RoleDefinition(
            role_name=name,
            description=CUSTOM_ROLE_DESCRIPTION,
            role_type="CustomRole",
            permissions=[
                Permission(actions=[], not_actions=[], data_actions=[RELEASE_DATA_ACTION], not_data_actions=[])
            ],
            assignable_scopes=[str(self.vault)],
        )
        try:
            return self._role_ref(definitions.create_or_update(scope, guid, body))
        except HttpResponseError as exc:
            if _azure_code(exc, Operation.ROLE_DEFINITION) != "roledefinitionwithsamenameexists":
                raise
            return self._adopt_role_named(name, exc)

    def _adopt_role_named(self, name: str, error: HttpResponseError) -> RoleRef:
        """Role names are tenant-unique: a same-named role made elsewhere is used if it is least-privilege."""
        wanted = name.strip().lower()
        # Listing at the vault shows exactly the roles assignable there (ours to adopt or refuse).
        for definition in self._client().role_definitions.list(str(self.vault), filter=f"roleName eq '{name}'"):
            if (definition.role_name or "").strip().lower() != wanted:
                continue
            if self._suitable(definition):
                return self._role_ref(definition)
            raise SkrError.of(
                FailureCode.CONFLICT,
                f"a role named {name!r} already exists ({definition.id}) but it is not the release-only role "
                f"assignable at {self.vault}: it must grant exactly the data action {RELEASE_DATA_ACTION}; "
                "fix it or set SKR_CUSTOM_ROLE_NAME to another name",
                operation=Operation.ROLE_DEFINITION,
            ) from error
        raise error

    def _suitable(self, definition: Any) -> bool:
        """Grants exactly the release data action and can be assigned at our vault's keys."""
        permissions = list(definition.permissions or [])
        actions = {a for p in permissions for a in (p.actions or [])}
        data_actions = {a.lower() for p in permissions for a in (p.data_actions or [])}
        vault = str(self.vault).lower()
        scopes = [s.rstrip("/").lower() for s in (definition.assignable_scopes or [])]
        assignable = any(vault == s or vault.startswith(s + "/") for s in scopes)
        return not actions and data_actions == {RELEASE_DATA_ACTION.lower()} and assignable

    @staticmethod
    def _role_ref(definition: Any) -> RoleRef:
        return RoleRef(
            role_definition_id=RoleDefinitionId.parse(definition.id),
            role_name=definition.role_name or "",
            custom=True,
        )

    def release_role_guids(self, role: RoleRef | None = None) -> set[str]:
        """GUIDs that count as "the release role": the built-in always, plus the configured custom one."""
        guids = {BUILTIN_RELEASE_ROLE_ID}
        if role is not None:
            guids.add(role.role_definition_id.guid)
        elif self._settings.role_mode is RoleMode.CUSTOM:
            guids.add(self.ensure_release_role().role_definition_id.guid)
        return guids

    # ----------------------------------------------------------------------- assignments
    def assign(self, key: KeyRef, principal_id: str, role: RoleRef) -> AssignmentRef:
        """PUT the deterministic assignment at key scope; an existing equivalent grant is success."""
        if key.resource_id is None:
            raise SkrError.of(
                FailureCode.INVALID_REQUEST,
                f"key {key.name!r} has no ARM resource id (SKR_VAULT_RESOURCE_ID unset?); cannot assign at key scope",
                operation=Operation.ROLE_ASSIGNMENT_WRITE,
            )
        if key.resource_id.vault != self.vault:
            raise SkrError.of(
                FailureCode.INVALID_REQUEST,
                f"key {key.resource_id} is not in the configured vault {self.vault}; refusing to grant outside it",
                operation=Operation.ROLE_ASSIGNMENT_WRITE,
            )
        scope = str(key.resource_id)
        try:
            name = role_assignment_name(key.resource_id, role.role_definition_id, principal_id)
        except NamingError as exc:
            raise SkrError.of(FailureCode.INVALID_REQUEST, str(exc), operation=Operation.ROLE_ASSIGNMENT_WRITE) from exc
        body = RoleAssignmentCreateParameters(
            role_definition_id=str(role.role_definition_id),
            principal_id=principal_id.lower(),
            principal_type="ServicePrincipal",  # avoids PrincipalNotFound for a just-created identity
            description=ASSIGNMENT_DESCRIPTION,
        )
        try:
            status, assignment = self._client().role_assignments.create(
                scope, name, body, cls=lambda response, body, _: (response.http_response.status_code, body)
            )
        except HttpResponseError as exc:
            if _azure_code(exc, Operation.ROLE_ASSIGNMENT_WRITE) != "roleassignmentexists":
                raise
            found = self._find(scope, principal_id, {role.role_definition_id.guid})
            if found is None:
                raise
            return found
        return _assignment_ref(assignment, created=status == 201)

    def get_assignment(self, assignment_id: RoleAssignmentId) -> AssignmentRef | None:
        """The assignment as ARM has it, or None while it is not (yet) readable."""
        try:
            assignment = self._client().role_assignments.get(assignment_id.scope, assignment_id.guid)
        except ResourceNotFoundError:
            return None
        return _assignment_ref(assignment)

    def list_release_assignments(self, principal_id: str | None = None) -> list[AssignmentRef]:
        """Release-role assignments at key scopes of the configured vault (optionally for one principal)."""
        guids = self.release_role_guids()
        query = f"principalId eq '{principal_id.lower()}'" if principal_id else None
        found = self._client().role_assignments.list_for_scope(str(self.vault), filter=query)
        return sorted(self._release_refs(found, guids), key=lambda a: str(a.assignment_id).lower())

    def _find(self, scope: str, principal_id: str, guids: set[str]) -> AssignmentRef | None:
        query = f"principalId eq '{principal_id.lower()}'"
        for ref in self._release_refs(self._client().role_assignments.list_for_scope(scope, filter=query), guids):
            if ref.scope.lower() == scope.lower() and ref.principal_id.lower() == principal_id.lower():
                return ref
        return None

    def _release_refs(self, assignments: Iterable[Any], guids: set[str]) -> list[AssignmentRef]:
        refs = []
        for assignment in assignments:
            try:
                ref = _assignment_ref(assignment)
            except (ResourceIdError, ValueError):
                continue  # an assignment shape we do not manage
            if self._is_release_grant(ref, guids):
                refs.append(ref)
        return refs

    def _is_release_grant(self, ref: AssignmentRef, guids: set[str]) -> bool:
        """A release-role assignment at one of this vault's keys (what we create and may remove)."""
        return ref.role_definition_id.guid in guids and ref.scope.lower().startswith(f"{self.vault}/keys/".lower())

    def delete_assignment(self, assignment_id: RoleAssignmentId) -> bool:
        """True when this call removed it, False when it was already absent."""
        try:
            deleted = self._client().role_assignments.delete(assignment_id.scope, assignment_id.guid)
        except ResourceNotFoundError:
            return False
        return deleted is not None

    def remove_assignments(self, request: OffboardingRequest) -> OffboardingResult:
        """Delete the VM's release-role assignments: the recorded ones plus any its principal still holds.

        A recorded id that is not a release-role assignment at one of our keys is left alone: an
        offboarding must never be able to remove unrelated grants.
        """
        guids = self.release_role_guids()
        targets: dict[RoleAssignmentId, None] = dict.fromkeys(request.assignment_ids)
        if request.principal_id:
            for ref in self.list_release_assignments(request.principal_id):
                targets.setdefault(ref.assignment_id)
        removed: list[RoleAssignmentId] = []
        absent: list[RoleAssignmentId] = []
        skipped: list[str] = []
        for assignment_id in targets:
            current = self.get_assignment(assignment_id)
            if current is None:
                absent.append(assignment_id)
                continue
            if not self._is_release_grant(current, guids):
                skipped.append(str(assignment_id))
                continue
            (removed if self.delete_assignment(assignment_id) else absent).append(assignment_id)
        detail = None
        if skipped:
            detail = f"left {len(skipped)} assignment(s) that are not release-role grants at this vault's keys alone"
        return OffboardingResult(vm_id=request.vm_id, removed_assignments=removed, already_absent=absent, detail=detail)


def _azure_code(exc: HttpResponseError, operation: Operation) -> str:
    return (classify(exc, operation).azure_code or "").lower()


def _assignment_ref(assignment: Any, *, created: bool = False) -> AssignmentRef:
    assignment_id = RoleAssignmentId.parse(assignment.id)
    return AssignmentRef(
        assignment_id=assignment_id,
        scope=assignment.scope or assignment_id.scope,
        principal_id=(assignment.principal_id or "").lower(),
        role_definition_id=RoleDefinitionId.parse(assignment.role_definition_id),
        created=created,
        created_on=getattr(assignment, "created_on", None),
    )
