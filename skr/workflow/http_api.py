"""HTTP API models: request bodies, query parsing with field errors, and the views we return.

Views never carry the Durable management URLs (they embed the system key); links point at our
own routes only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import Field, ValidationError, field_validator

from skr.models import (
    FailureCode,
    OffboardingResult,
    OnboardingResult,
    Outcome,
    Stage,
    VmResourceId,
)
from skr.naming import NamingError, validate_key_name
from skr.workflow._base import Frozen
from skr.workflow.instances import InstanceSnapshot
from skr.workflow.listing import as_utc

RESERVED_QUERY = frozenset({"code"})  # the function key travels as ?code=; never a filter


class StartOnboardingBody(Frozen):
    vm_id: VmResourceId
    key_name: str | None = None

    @field_validator("key_name")
    @classmethod
    def _key_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_key_name(value)
        except NamingError as exc:
            raise ValueError(str(exc)) from None


class RetryFailedBody(Frozen):
    """Bulk retry of failed onboardings, optionally narrowed (ops ask for "restart by error")."""

    failure_code: FailureCode | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)

    @field_validator("created_from", "created_to")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)


class FieldError(Frozen):
    field: str
    message: str


class ErrorDetail(Frozen):
    code: str
    message: str
    fields: list[FieldError] = Field(default_factory=list)


class ErrorBody(Frozen):
    error: ErrorDetail


def error_body(code: str, message: str, fields: list[FieldError] | None = None) -> dict[str, Any]:
    return ErrorBody(error=ErrorDetail(code=code, message=message, fields=fields or [])).to_json()


def field_errors(exc: ValidationError) -> list[FieldError]:
    """Pydantic errors as ``field: message`` pairs, without echoing the rejected input."""
    out: list[FieldError] = []
    for item in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item.get("loc", ())) or "(body)"
        out.append(FieldError(field=where, message=str(item.get("msg", "invalid"))))
    return out


def query_values(params: Mapping[str, str]) -> dict[str, str]:
    """Query parameters minus the function key and empty values."""
    return {name: value for name, value in params.items() if name not in RESERVED_QUERY and value != ""}


class OffboardingView(Frozen):
    id: str
    runtime_status: str | None = None
    created_time: datetime | None = None
    last_updated_time: datetime | None = None
    custom_status: dict[str, Any] | None = None
    result: OffboardingResult | None = None


class OnboardingView(Frozen):
    id: str
    vm_id: str | None = None
    runtime_status: str | None = None
    stage: Stage | None = None
    outcome: Outcome | None = None
    created_time: datetime | None = None
    last_updated_time: datetime | None = None
    custom_status: dict[str, Any] | None = None
    result: OnboardingResult | None = None
    offboarding: OffboardingView | None = None
    links: dict[str, str] = Field(default_factory=dict)


class OnboardingPage(Frozen):
    items: list[OnboardingView]
    continuation: str | None = None
    next: str | None = None


def onboarding_view(
    snapshot: InstanceSnapshot,
    *,
    base_url: str,
    vm_id: VmResourceId | None = None,
    offboarding: InstanceSnapshot | None = None,
) -> OnboardingView:
    """The public shape of one onboarding; ``base_url`` is ``{origin}/api/onboardings``."""
    result = snapshot.result
    vm_id = vm_id or snapshot.vm_id
    self_url = f"{base_url}/{snapshot.instance_id}"
    return OnboardingView(
        id=snapshot.instance_id,
        vm_id=str(vm_id) if vm_id is not None else None,
        runtime_status=snapshot.runtime_status,
        stage=snapshot.stage,
        outcome=snapshot.outcome,
        created_time=snapshot.created_time,
        last_updated_time=snapshot.last_updated_time,
        custom_status=snapshot.custom_status if isinstance(snapshot.custom_status, dict) else None,
        result=result,
        offboarding=None if offboarding is None else offboarding_view(offboarding),
        links={"self": self_url, "retry": f"{self_url}/retry", "offboard": self_url},
    )


def offboarding_view(snapshot: InstanceSnapshot) -> OffboardingView:
    return OffboardingView(
        id=snapshot.instance_id,
        runtime_status=snapshot.runtime_status,
        created_time=snapshot.created_time,
        last_updated_time=snapshot.last_updated_time,
        custom_status=snapshot.custom_status if isinstance(snapshot.custom_status, dict) else None,
        result=snapshot.offboarding_result,
    )
