"""ASP.NET-style route templates of HTTP-triggered functions (``orders/{id:int}/{*rest}``)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

_PARAM = re.compile(
    r"^\{(?P<star>\*)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<constraint>[^}=?]+))?"
    r"(?P<optional>\?)?(?:=(?P<default>[^}]*))?\}$"
)


class RouteError(ValueError):
    """A route template the host cannot serve."""


def _constraint_ok(constraint: str | None, value: str) -> bool:
    if constraint is None:
        return True
    kind = constraint.split("(")[0].lower()
    checks = {
        "int": lambda v: re.fullmatch(r"-?\d+", v) is not None,
        "long": lambda v: re.fullmatch(r"-?\d+", v) is not None,
        "alpha": str.isalpha,
        "bool": lambda v: v.lower() in ("true", "false"),
        "double": lambda v: re.fullmatch(r"-?\d+(\.\d+)?", v) is not None,
        "guid": _is_guid,
    }
    check = checks.get(kind)
    return True if check is None else bool(check(value))


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _Segment:
    literal: str | None = None
    name: str | None = None
    constraint: str | None = None
    optional: bool = False
    default: str | None = None
    catch_all: bool = False


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    segments: tuple[_Segment, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        segments = []
        parts = [p for p in template.strip("/").split("/") if p != ""]
        for index, part in enumerate(parts):
            match = _PARAM.match(part)
            if match is None:
                if "{" in part or "}" in part:
                    raise RouteError(f"route {template!r}: mixed literal/parameter segment {part!r} is not supported")
                segments.append(_Segment(literal=part))
                continue
            catch_all = bool(match["star"])
            if catch_all and index != len(parts) - 1:
                raise RouteError(f"route {template!r}: a catch-all parameter must be the last segment")
            segments.append(
                _Segment(
                    name=match["name"],
                    constraint=match["constraint"],
                    optional=bool(match["optional"]) or match["default"] is not None or catch_all,
                    default=match["default"],
                    catch_all=catch_all,
                )
            )
        return cls(template, tuple(segments))

    @property
    def precedence(self) -> tuple[int, int]:
        """Sort key: more literal segments first, catch-alls last."""
        literals = sum(1 for s in self.segments if s.literal is not None)
        return (-literals, int(any(s.catch_all for s in self.segments)))

    def match(self, path: str) -> dict[str, str] | None:
        parts = [p for p in path.strip("/").split("/") if p != ""]
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.catch_all:
                rest = "/".join(parts[index:])
                if rest:
                    values[segment.name or ""] = rest
                return values
            if index >= len(parts):
                if segment.literal is not None or not segment.optional:
                    return None
                if segment.default is not None and segment.name:
                    values[segment.name] = segment.default
                continue
            part = parts[index]
            if segment.literal is not None:
                if part.lower() != segment.literal.lower():
                    return None
            elif not _constraint_ok(segment.constraint, part):
                return None
            elif segment.name:
                values[segment.name] = part
        return values if len(parts) <= len(self.segments) else None
