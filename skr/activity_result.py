"""The activity envelope (team/ACTIVITIES.md): ``{"ok": true, "value": ...}`` or ``{"ok": false, "error": ...}``.

Expected Azure failures travel as data so orchestrators branch on values deterministically and
honour Retry-After with durable timers; only programming errors raise out of an activity.
"""

from __future__ import annotations

from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, model_validator

from skr.errors import ClassifiedError

T = TypeVar("T")


class ActivityResult(BaseModel, Generic[T]):
    """Exactly one of ``value`` (ok) or ``error`` (not ok)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    ok: bool
    value: T | None = None
    error: ClassifiedError | None = None

    @model_validator(mode="after")
    def _one_side(self) -> Self:
        if self.ok and self.error is not None:
            raise ValueError("an ok activity result carries no error")
        if not self.ok and self.error is None:
            raise ValueError("a failed activity result needs an error")
        if not self.ok and self.value is not None:
            raise ValueError("a failed activity result carries no value")
        return self

    def to_json(self) -> dict[str, Any]:
        """The dict Durable history stores; the value side keeps only the key that applies."""
        if self.ok:
            return {"ok": True, "value": _dump(self.value)}
        assert self.error is not None
        return {"ok": False, "error": self.error.to_json()}

    def unwrap(self) -> T:
        """The value; raises ValueError (naming the classified code) when the activity failed."""
        if not self.ok:
            assert self.error is not None
            raise ValueError(f"activity failed: {self.error.describe()}")
        return self.value  # type: ignore[return-value]  # ok results may legitimately carry None


def ok(value: Any) -> dict[str, Any]:
    """Envelope JSON for a successful activity (``value`` may be a model, plain JSON or None)."""
    return {"ok": True, "value": _dump(value)}


def fail(error: ClassifiedError) -> dict[str, Any]:
    """Envelope JSON for an expected, classified failure."""
    return {"ok": False, "error": error.to_json()}


def parse(data: Any, value_model: type[T] | Any) -> ActivityResult[T]:
    """Read an activity's JSON back (orchestrator side), validating the value against ``value_model``.

    ``value_model`` is a model class or any type pydantic understands (``dict[str, Any]``,
    ``AssignmentRef | None``...). Raises ``pydantic.ValidationError`` on a malformed envelope.
    """
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise ValueError("not an activity result: expected a JSON object with a boolean 'ok'")
    if not data["ok"]:
        return ActivityResult[Any](ok=False, error=ClassifiedError.model_validate(data.get("error")))
    value = TypeAdapter(value_model).validate_python(data.get("value"))
    return ActivityResult[Any](ok=True, value=value)


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_dump(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    return value
