"""Scope guard (DESIGN §7): only VMs inside the configured scopes (and tag, when set) are onboarded."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, model_validator

from skr.models import ScopeId, SkipReason, VmFacts, VmResourceId
from skr.workflow._base import Frozen


class ScopeGuard(Frozen):
    """An empty scope list admits nothing: a missing setting must never mean "everything"."""

    scopes: tuple[ScopeId, ...] = ()
    tag_name: str | None = Field(default=None, min_length=1, max_length=512)
    tag_value: str | None = Field(default=None, max_length=256)  # None with a name: the tag must exist

    @model_validator(mode="after")
    def _value_needs_name(self) -> ScopeGuard:
        if self.tag_value is not None and self.tag_name is None:
            raise ValueError("a tag filter value needs a tag name")
        return self

    def contains(self, vm_id: VmResourceId) -> bool:
        return any(scope.contains(vm_id) for scope in self.scopes)

    def check_id(self, vm_id: VmResourceId) -> SkipReason | None:
        """None when the VM id is inside a configured scope, else why not."""
        return None if self.contains(vm_id) else SkipReason.OUT_OF_SCOPE

    def check_tags(self, tags: Mapping[str, str]) -> SkipReason | None:
        """Azure tag names compare case-insensitively, values case-sensitively."""
        if self.tag_name is None:
            return None
        wanted = self.tag_name.lower()
        for name, value in tags.items():
            if name.lower() == wanted and (self.tag_value is None or value == self.tag_value):
                return None
        return SkipReason.TAG_FILTER_MISMATCH

    def check_facts(self, facts: VmFacts) -> SkipReason | None:
        """Scope, tag filter and security type, in that order."""
        return (
            self.check_id(facts.vm_id)
            or self.check_tags(facts.tags)
            or (None if facts.is_confidential else SkipReason.NOT_CONFIDENTIAL_VM)
        )

    def describe(self) -> str:
        scopes = ", ".join(str(scope) for scope in self.scopes) or "(none)"
        if self.tag_name is None:
            return f"scopes {scopes}"
        tag = self.tag_name if self.tag_value is None else f"{self.tag_name}={self.tag_value}"
        return f"scopes {scopes} with tag {tag}"
