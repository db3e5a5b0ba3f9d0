"""Durable instance snapshots and whether to start, restart or leave an onboarding alone.

Instance ids are deterministic per VM, so "is there already one?" is a status read; these rules
turn that status (and, when known, the VM's current identity) into one decision that the event,
HTTP and reconcile paths all share.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from skr.models import (
    FailureCode,
    OffboardingRequest,
    OffboardingResult,
    OnboardingResult,
    Outcome,
    Stage,
    TriggerSource,
    VmFacts,
    VmResourceId,
)
from skr.workflow._base import Frozen

ACTIVE_STATUSES = frozenset({"Pending", "Running", "ContinuedAsNew", "Suspended"})
BROKEN_STATUSES = frozenset({"Failed", "Terminated", "Canceled"})

# Failures a later VM write can cure without an identity change (the VM was not there or not ready).
RETRY_ON_EVENT = frozenset(
    {FailureCode.VM_NOT_FOUND, FailureCode.VM_NOT_READY, FailureCode.TRANSIENT, FailureCode.THROTTLED}
)


class InstanceSnapshot(Frozen):
    """What the Durable client reports about one instance, reduced to what decisions need."""

    instance_id: str
    name: str | None = None
    runtime_status: str | None = None
    created_time: datetime | None = None
    last_updated_time: datetime | None = None
    custom_status: Any = None
    output: Any = None
    input: Any = None

    @property
    def vm_id(self) -> VmResourceId | None:
        """From the result, else from the input (``{"request": {"vm_id"}}``) when it was fetched."""
        result = self.result
        if result is not None:
            return result.vm_id
        request = self.input.get("request") if isinstance(self.input, dict) else None
        if isinstance(request, dict) and isinstance(request.get("vm_id"), str):
            try:
                return VmResourceId.parse(request["vm_id"])
            except ValueError:
                return None
        return None

    @property
    def active(self) -> bool:
        return self.runtime_status in ACTIVE_STATUSES

    @property
    def broken(self) -> bool:
        """Ended without a result of ours (crashed, terminated)."""
        return self.runtime_status in BROKEN_STATUSES

    @property
    def stage(self) -> Stage | None:
        if isinstance(self.custom_status, dict) and isinstance(self.custom_status.get("stage"), str):
            try:
                return Stage(self.custom_status["stage"])
            except ValueError:
                return None
        return None

    @property
    def result(self) -> OnboardingResult | None:
        """The onboarding output, when this is a completed onboarding with a valid one."""
        if self.runtime_status != "Completed" or not isinstance(self.output, dict):
            return None
        try:
            return OnboardingResult.from_json(self.output)
        except ValidationError:
            return None

    @property
    def offboarding_result(self) -> OffboardingResult | None:
        if self.runtime_status != "Completed" or not isinstance(self.output, dict):
            return None
        try:
            return OffboardingResult.from_json(self.output)
        except ValidationError:
            return None

    @property
    def outcome(self) -> Outcome | None:
        """The onboarding outcome; an instance that crashed or was terminated counts as failed."""
        result = self.result
        if result is not None:
            return result.outcome
        return Outcome.FAILED if self.broken else None


class VmIdentity(Frozen):
    """What makes a VM "the same VM": its unique vmId and its system-assigned identity."""

    unique_vm_id: str | None = None
    principal_id: str | None = None

    @classmethod
    def of_facts(cls, facts: VmFacts) -> VmIdentity:
        return cls(unique_vm_id=facts.unique_id, principal_id=facts.principal_id)

    @classmethod
    def of_result(cls, result: OnboardingResult) -> VmIdentity:
        return cls(unique_vm_id=result.unique_vm_id, principal_id=result.principal_id)

    def differs_from(self, other: VmIdentity) -> bool:
        mine = ((self.unique_vm_id or "").lower(), (self.principal_id or "").lower())
        theirs = ((other.unique_vm_id or "").lower(), (other.principal_id or "").lower())
        return mine != theirs


class StartAction(StrEnum):
    START = "start"  # no instance yet
    RESTART = "restart"  # a finished instance is run again (same id)
    SKIP_RUNNING = "skip_running"  # one is pending or running: never a second
    SKIP_DONE = "skip_done"  # finished and nothing has changed


class StartDecision(Frozen):
    action: StartAction
    reason: str
    supersedes: OffboardingRequest | None = None

    @property
    def starts(self) -> bool:
        return self.action in (StartAction.START, StartAction.RESTART)


def decide_onboarding(
    existing: InstanceSnapshot | None, current: VmIdentity | None, *, explicit: bool
) -> StartDecision:
    """Start, restart or skip an onboarding.

    ``explicit`` (an operator asked over HTTP) restarts any finished instance. Otherwise a finished
    one restarts only when it left no usable result, failed for a reason a VM write can cure, or
    the VM's identity changed - then the old identity's assignment is named in ``supersedes``.
    """
    if existing is None or existing.runtime_status is None:
        return StartDecision(action=StartAction.START, reason="no onboarding yet")
    if existing.active:
        return StartDecision(action=StartAction.SKIP_RUNNING, reason=f"onboarding is {existing.runtime_status}")
    result = existing.result
    supersedes = _superseded(result, current)
    if explicit:
        return StartDecision(action=StartAction.RESTART, reason="requested", supersedes=supersedes)
    if result is None:
        return StartDecision(
            action=StartAction.RESTART, reason=f"previous onboarding ended {existing.runtime_status} without a result"
        )
    if supersedes is not None or (current is not None and current.differs_from(VmIdentity.of_result(result))):
        return StartDecision(action=StartAction.RESTART, reason="VM identity changed", supersedes=supersedes)
    if result.outcome is Outcome.FAILED and result.failure_code in RETRY_ON_EVENT:
        return StartDecision(action=StartAction.RESTART, reason=f"previous onboarding failed {result.failure_code}")
    return StartDecision(action=StartAction.SKIP_DONE, reason=f"already {result.outcome}")


def _superseded(result: OnboardingResult | None, current: VmIdentity | None) -> OffboardingRequest | None:
    """The previous identity's assignment, when the VM now has another identity."""
    if result is None or current is None or result.assignment is None or result.principal_id is None:
        return None
    if (current.principal_id or "").lower() == result.principal_id.lower():
        return None
    return OffboardingRequest(
        vm_id=result.vm_id,
        principal_id=result.principal_id,
        assignment_ids=[result.assignment.assignment_id],
        source=TriggerSource.RECONCILE,
    )


def offboarding_request(result: OnboardingResult, *, disable_key: bool, source: TriggerSource) -> OffboardingRequest:
    """What to remove for a VM, from its onboarding result (a deleted VM can no longer be read).

    The key is disabled only when asked and only when it is this VM's own key (never a shared one).
    """
    key = result.key
    return OffboardingRequest(
        vm_id=result.vm_id,
        principal_id=result.principal_id,
        assignment_ids=[result.assignment.assignment_id] if result.assignment else [],
        key=key,
        disable_key=bool(disable_key and key is not None and not key.shared),
        source=source,
    )
