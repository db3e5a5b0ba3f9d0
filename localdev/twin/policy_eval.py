"""The twin's own Key Vault release-policy evaluator (grammar 1.0.0, reference skr_flow.md §6).

Independent of ``skr.policy`` on purpose: differential tests between the two catch bugs in
either. Semantics emulated (documented where Azure is silent):

* a policy is ``{"version": "1.0.0", "anyOf": [authority, ...]}``; an authority is
  ``{"authority": <issuer>, "allOf"|"anyOf": [condition, ...]}`` (not both);
* only authorities whose URL equals the token ``iss`` (trailing slash and host case ignored)
  are considered; the release is allowed when one of them is satisfied;
* a condition is ``{"claim": "a.b.c", <op>: value}`` or a nested ``{"allOf"|"anyOf": [...]}``;
* dot paths walk nested objects; a missing claim leaves every comparison unmet;
  ``exists: true`` needs the claim, ``exists: false`` needs it absent;
* equality is lenient between booleans and the strings ``"true"``/``"false"`` and between
  numbers and numeric strings; ordering operators compare numbers (numeric strings allowed)
  or two strings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SUPPORTED_VERSIONS = ("1.0.0",)
OPERATORS = ("equals", "notEquals", "less", "lessOrEquals", "greater", "greaterOrEquals", "exists")
_MISSING = object()


class PolicyFormatError(ValueError):
    """The policy document does not follow the grammar."""


@dataclass(frozen=True)
class Evaluation:
    """Outcome of evaluating a policy against token claims."""

    allowed: bool
    authority_matched: bool
    unmet: tuple[str, ...] = field(default_factory=tuple)  # claim paths whose condition failed

    def describe(self) -> str:
        if self.allowed:
            return "policy satisfied"
        if not self.authority_matched:
            return "the token issuer matches no authority of the key release policy"
        claims = ", ".join(self.unmet) or "(none)"
        return f"unmet claim conditions: {claims}"


def normalise_authority(url: str) -> str:
    """Compare issuers as scheme://host[:port]/path without a trailing slash, host case-folded."""
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        return url.strip().rstrip("/").lower()
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def parse_policy(data: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """Decode and validate a policy; raise PolicyFormatError naming what is wrong."""
    if isinstance(data, Mapping):
        policy: Any = dict(data)
    else:
        try:
            policy = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PolicyFormatError(f"release policy is not valid JSON: {exc}") from exc
    if not isinstance(policy, dict):
        raise PolicyFormatError("release policy must be a JSON object")
    version = policy.get("version")
    if version is None:
        raise PolicyFormatError("Key Release Policy: missing 'version' property")
    if version not in SUPPORTED_VERSIONS:
        raise PolicyFormatError(f"Key Release Policy: unsupported version {version!r}")
    authorities = policy.get("anyOf")
    if not isinstance(authorities, list) or not authorities:
        raise PolicyFormatError("Key Release Policy: 'anyOf' must be a non-empty array of authorities")
    for index, authority in enumerate(authorities):
        _check_authority(authority, f"anyOf[{index}]")
    return policy


def _check_authority(node: Any, where: str) -> None:
    if not isinstance(node, dict):
        raise PolicyFormatError(f"{where}: an authority must be an object")
    if not isinstance(node.get("authority"), str) or not node["authority"].strip():
        raise PolicyFormatError(f"{where}: 'authority' must be a non-empty string")
    combinators = [key for key in ("allOf", "anyOf") if key in node]
    if len(combinators) != 1:
        raise PolicyFormatError(f"{where}: an authority needs exactly one of 'allOf' or 'anyOf'")
    _check_condition_array(node[combinators[0]], f"{where}.{combinators[0]}")


def _check_condition_array(items: Any, where: str) -> None:
    if not isinstance(items, list) or not items:
        raise PolicyFormatError(f"{where}: must be a non-empty array of conditions")
    for index, item in enumerate(items):
        _check_condition(item, f"{where}[{index}]")


def _check_condition(node: Any, where: str) -> None:
    if not isinstance(node, dict):
        raise PolicyFormatError(f"{where}: a condition must be an object")
    combinators = [key for key in ("allOf", "anyOf") if key in node]
    if combinators:
        if len(combinators) != 1 or "claim" in node:
            raise PolicyFormatError(f"{where}: a nested condition has exactly one of 'allOf' or 'anyOf'")
        _check_condition_array(node[combinators[0]], f"{where}.{combinators[0]}")
        return
    if not isinstance(node.get("claim"), str) or not node["claim"]:
        raise PolicyFormatError(f"{where}: 'claim' must be a non-empty string")
    operators = [key for key in OPERATORS if key in node]
    if len(operators) != 1:
        raise PolicyFormatError(f"{where}: a claim condition needs exactly one operator of {', '.join(OPERATORS)}")
    value = node[operators[0]]
    if isinstance(value, (dict, list)) or value is None:
        raise PolicyFormatError(f"{where}: '{operators[0]}' takes a string, number or boolean")


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """Walk ``a.b.c`` through nested objects; a whole-key match wins over splitting."""
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def evaluate(policy: Mapping[str, Any], claims: Mapping[str, Any]) -> Evaluation:
    """Evaluate a validated policy against verified token claims."""
    issuer = claims.get("iss")
    wanted = normalise_authority(issuer) if isinstance(issuer, str) else None
    unmet: list[str] = []
    matched = False
    for authority in policy["anyOf"]:
        if wanted is None or normalise_authority(authority["authority"]) != wanted:
            continue
        matched = True
        failures: list[str] = []
        if _holds(authority, claims, failures):
            return Evaluation(allowed=True, authority_matched=True)
        unmet.extend(path for path in failures if path not in unmet)
    return Evaluation(allowed=False, authority_matched=matched, unmet=tuple(unmet))


def _holds(node: Mapping[str, Any], claims: Mapping[str, Any], failures: list[str]) -> bool:
    if "allOf" in node:
        results = [_holds(child, claims, failures) for child in node["allOf"]]
        return all(results)
    if "anyOf" in node:
        local: list[str] = []
        if any(_holds(child, claims, local) for child in node["anyOf"]):
            return True
        failures.extend(local)
        return False
    operator = next(key for key in OPERATORS if key in node)
    ok = compare(operator, claim_at(claims, node["claim"]), node[operator])
    if not ok:
        failures.append(node["claim"])
    return ok


def compare(operator: str, actual: Any, expected: Any) -> bool:
    """One claim condition; ``actual`` is the claim value or the missing marker."""
    if operator == "exists":
        wanted = _as_bool(expected)
        return (actual is not _MISSING) == (True if wanted is None else wanted)
    if actual is _MISSING or (isinstance(actual, (Mapping, Sequence)) and not isinstance(actual, str)):
        return False
    if operator == "equals":
        return _equal(actual, expected)
    if operator == "notEquals":
        return not _equal(actual, expected)
    ordering = _order(actual, expected)
    if ordering is None:
        return False
    return {
        "less": ordering < 0,
        "lessOrEquals": ordering <= 0,
        "greater": ordering > 0,
        "greaterOrEquals": ordering >= 0,
    }[operator]


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        left, right = _as_bool(actual), _as_bool(expected)
        return left is not None and left == right
    left_num, right_num = _as_number(actual), _as_number(expected)
    if isinstance(actual, (int, float)) or isinstance(expected, (int, float)):
        return left_num is not None and left_num == right_num
    return bool(actual == expected)


def _order(actual: Any, expected: Any) -> int | None:
    left, right = _as_number(actual), _as_number(expected)
    if left is not None and right is not None:
        return (left > right) - (left < right)
    if isinstance(actual, str) and isinstance(expected, str):
        return (actual > expected) - (actual < expected)
    return None
