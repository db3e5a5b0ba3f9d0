"""Key release policy: typed grammar (v1.0.0), builder, wire codec, lint and a Key Vault-like evaluator.

Key Vault only says "forbidden" when a release is refused; this module lets ops see *why* before a
VM ever tries: lint catches policies that can never match a guest attestation token, and the
evaluator names every unmet claim with the value the token actually carries.

Wire form (reference/skr_flow.md §6)::

    {"version": "1.0.0",
     "anyOf": [{"authority": "https://<maa>", "allOf"|"anyOf": [condition, ...]}, ...]}
    condition := {"claim": "a.b.c", <operator>: value} | {"allOf"|"anyOf": [condition, ...]}

Semantics where Azure is silent (documented, shared with the CLI dry-run):

* an authority applies when it equals the token ``iss`` with scheme and host case-folded and any
  trailing slash ignored; the release is allowed when one applicable authority is satisfied;
* ``a.b.c`` walks nested objects (a literal top-level key ``"a.b.c"`` wins); a missing claim
  leaves every operator unmet except ``exists: false``;
* equality is lenient between booleans and ``"true"``/``"false"`` and between numbers and
  numeric strings; two strings compare exactly (case-sensitive);
* ordering operators compare numbers (numeric strings allowed), else two strings
  lexicographically; anything else (booleans, objects) is unmet.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Literal, Self, cast
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_serializer,
    model_validator,
)

POLICY_VERSION: Literal["1.0.0"] = "1.0.0"
SUPPORTED_VERSIONS = (POLICY_VERSION,)

ATTESTATION_TYPE_CLAIM = "x-ms-isolation-tee.x-ms-attestation-type"
COMPLIANCE_STATUS_CLAIM = "x-ms-isolation-tee.x-ms-compliance-status"
GUEST_TEE_PREFIX = "x-ms-isolation-tee."
GUEST_TOP_LEVEL_ATTESTATION_TYPE = "azurevm"

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr
"""A claim value a policy may compare against: string, number or boolean (never object/array)."""


class Operator(StrEnum):
    EQUALS = "equals"
    NOT_EQUALS = "notEquals"
    LESS = "less"
    LESS_OR_EQUALS = "lessOrEquals"
    GREATER = "greater"
    GREATER_OR_EQUALS = "greaterOrEquals"
    EXISTS = "exists"


class GroupKind(StrEnum):
    ALL_OF = "allOf"
    ANY_OF = "anyOf"


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class LintIssue(BaseModel):
    """One finding; ``path`` points into the policy JSON, e.g. ``anyOf[0].allOf[1]``."""

    model_config = ConfigDict(frozen=True)
    severity: Severity
    code: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity.value}: {self.path}: {self.message} [{self.code}]"


class PolicyError(ValueError):
    """A policy that does not follow the grammar; carries every error found."""

    def __init__(self, issues: Sequence[LintIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("invalid key release policy: " + "; ".join(f"{i.path}: {i.message}" for i in self.issues))


# ---------------------------------------------------------------------------------------------
# Shared checks (used by the wire parser and by programmatic construction alike)
# ---------------------------------------------------------------------------------------------

_CLAIM_SEGMENT = re.compile(r"^[^.\[\]\s]+$")


def _authority_problem(authority: str) -> tuple[str, str] | None:
    """(code, message) when an authority URL is unusable."""
    parts = urlsplit(authority.strip())
    if parts.scheme.lower() != "https":
        return (
            "authority_not_https",
            f"authority {authority!r} must be an https:// URL (Key Vault fetches its OIDC metadata)",
        )
    if not parts.hostname:
        return ("authority_invalid", f"authority {authority!r} has no host")
    if parts.query or parts.fragment:
        return ("authority_invalid", f"authority {authority!r} must not carry a query or fragment")
    return None


def _claim_problem(claim: str) -> str | None:
    if not claim:
        return "claim path must be a non-empty string"
    if not all(_CLAIM_SEGMENT.match(segment) for segment in claim.split(".")):
        return (
            f"claim path {claim!r} must be dot-separated names without spaces or brackets "
            "(array paths are not supported)"
        )
    return None


def _value_problem(operator: Operator, value: Any) -> str | None:
    if operator is Operator.EXISTS:
        if isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")):
            return None
        return f"'exists' takes true or false, got {json.dumps(value)}"
    if isinstance(value, bool | int | float | str) and not (isinstance(value, float) and not math.isfinite(value)):
        return None
    return f"'{operator.value}' takes a string, number or boolean, got {json.dumps(value, default=repr)}"


def normalise_authority(authority: str) -> str:
    """Issuer comparison form: scheme and host lower-case, no trailing slash."""
    text = authority.strip()
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        return text.rstrip("/")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


# ---------------------------------------------------------------------------------------------
# Typed grammar
# ---------------------------------------------------------------------------------------------


def _parsed_or_raise(parse: Callable[[list[LintIssue]], dict[str, Any] | None]) -> dict[str, Any]:
    """Run a wire parser for a pydantic before-validator: the fields, or a ValueError listing each error."""
    issues: list[LintIssue] = []
    parsed = parse(issues)
    if parsed is None:
        raise ValueError("; ".join(f"{i.path}: {i.message}" for i in issues))
    return parsed


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True)

    def to_json(self) -> dict[str, Any]:
        """The wire (Key Vault) JSON form."""
        return self.model_dump(mode="json")


class ClaimCondition(_Node):
    """``{"claim": path, <operator>: value}``."""

    claim: str
    operator: Operator
    value: Scalar

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "operator" not in data:
            return _parsed_or_raise(lambda issues: _parse_claim_condition(data, "$", issues))
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        problem = _claim_problem(self.claim) or _value_problem(self.operator, self.value)
        if problem:
            raise ValueError(problem)
        return self

    @model_serializer
    def _wire(self) -> dict[str, Any]:
        return {"claim": self.claim, self.operator.value: self.value}

    @classmethod
    def of(cls, claim: str, operator: Operator | str, value: Any) -> ClaimCondition:
        return cls(claim=claim, operator=Operator(operator), value=value)


class ConditionGroup(_Node):
    """``{"allOf"|"anyOf": [condition, ...]}`` nested inside an authority or another group."""

    kind: GroupKind
    conditions: tuple[Condition, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "kind" not in data:
            return _parsed_or_raise(lambda issues: _parse_group(data, "$", issues))
        return data

    @model_serializer
    def _wire(self) -> dict[str, Any]:
        return {self.kind.value: [c.to_json() for c in self.conditions]}


def _condition_tag(value: Any) -> str:
    if isinstance(value, ClaimCondition):
        return "claim"
    if isinstance(value, ConditionGroup):
        return "group"
    if isinstance(value, Mapping) and ("claim" in value or "operator" in value):
        return "claim"
    return "group"


Condition = Annotated[
    Annotated[ClaimCondition, Tag("claim")] | Annotated[ConditionGroup, Tag("group")],
    Discriminator(_condition_tag),
]


class AuthorityRule(_Node):
    """``{"authority": url, "allOf"|"anyOf": [...]}``: the conditions one attestation authority must meet."""

    authority: str
    kind: GroupKind = GroupKind.ALL_OF
    conditions: tuple[Condition, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "kind" not in data and "conditions" not in data:
            return _parsed_or_raise(lambda issues: _parse_authority(data, "$", issues))
        return data

    @field_validator("authority")
    @classmethod
    def _https(cls, authority: str) -> str:
        problem = _authority_problem(authority)
        if problem:
            raise ValueError(problem[1])
        return authority

    @model_serializer
    def _wire(self) -> dict[str, Any]:
        return {"authority": self.authority, self.kind.value: [c.to_json() for c in self.conditions]}


class ReleasePolicy(_Node):
    """A whole key release policy: any one authority rule may allow the release."""

    version: Literal["1.0.0"] = POLICY_VERSION
    authorities: tuple[AuthorityRule, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "authorities" not in data:
            return _parsed_or_raise(lambda issues: _parse_policy(data, issues))
        return data

    @model_serializer
    def _wire(self) -> dict[str, Any]:
        return {"version": self.version, "anyOf": [a.to_json() for a in self.authorities]}

    def claim_conditions(self) -> Iterator[tuple[str, int, ClaimCondition]]:
        """Every claim condition with its wire path and the index of its authority rule."""
        for index, rule in enumerate(self.authorities):
            yield from _walk(rule.conditions, rule.kind, f"anyOf[{index}]", index)


def _walk(
    conditions: Sequence[ClaimCondition | ConditionGroup], kind: GroupKind, path: str, rule: int
) -> Iterator[tuple[str, int, ClaimCondition]]:
    for index, condition in enumerate(conditions):
        here = f"{path}.{kind.value}[{index}]"
        if isinstance(condition, ClaimCondition):
            yield here, rule, condition
        else:
            yield from _walk(condition.conditions, condition.kind, here, rule)


ConditionGroup.model_rebuild()
AuthorityRule.model_rebuild()
ReleasePolicy.model_rebuild()


# ---------------------------------------------------------------------------------------------
# Wire parser: collects every error with its path (lint) and builds typed nodes
# ---------------------------------------------------------------------------------------------


def _issue(issues: list[LintIssue], code: str, path: str, message: str) -> None:
    issues.append(LintIssue(severity=Severity.ERROR, code=code, path=path, message=message))


def _parse_policy(raw: Any, issues: list[LintIssue]) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        _issue(issues, "not_object", "$", f"a release policy is a JSON object, got {type(raw).__name__}")
        return None
    for key in raw:
        if key not in ("version", "anyOf"):
            _unknown_key(issues, "$", key, ("version", "anyOf"))
    version = raw.get("version")
    if version is None:
        _issue(issues, "missing_version", "version", "missing 'version' (Key Vault requires \"1.0.0\")")
    elif version not in SUPPORTED_VERSIONS:
        _issue(
            issues,
            "unknown_version",
            "version",
            f'unknown version {json.dumps(version)}; only "1.0.0" is documented',
        )
    if "allOf" in raw and "anyOf" not in raw:
        _issue(issues, "no_authority", "$", "the top level must be 'anyOf' a list of authorities, not 'allOf'")
        return None
    authorities_raw = raw.get("anyOf")
    if not isinstance(authorities_raw, list) or not authorities_raw:
        _issue(issues, "no_authority", "anyOf", "'anyOf' must list at least one authority")
        return None
    rules = [_parse_authority(item, f"anyOf[{i}]", issues) for i, item in enumerate(authorities_raw)]
    if issues or version not in SUPPORTED_VERSIONS:
        return None
    return {"version": version, "authorities": tuple(cast(list[dict[str, Any]], rules))}


def _parse_authority(raw: Any, path: str, issues: list[LintIssue]) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        _issue(issues, "not_object", path, "an authority entry must be a JSON object")
        return None
    before = len(issues)
    authority = raw.get("authority")
    if not isinstance(authority, str) or not authority.strip():
        _issue(issues, "no_authority", f"{path}.authority", "missing 'authority' (the attestation service URL)")
    else:
        problem = _authority_problem(authority)
        if problem:
            _issue(issues, problem[0], f"{path}.authority", problem[1])
    for key in raw:
        if key not in ("authority", "allOf", "anyOf"):
            _unknown_key(issues, path, key, ("authority", "allOf", "anyOf"))
    group = _parse_group_body(raw, path, issues)
    if group is None or len(issues) > before:
        return None
    return {"authority": authority, **group}


def _parse_group(raw: Mapping[str, Any], path: str, issues: list[LintIssue]) -> dict[str, Any] | None:
    before = len(issues)
    for key in raw:
        if key not in ("allOf", "anyOf"):
            _unknown_key(issues, path, key, ("allOf", "anyOf"))
    group = _parse_group_body(raw, path, issues)
    return group if len(issues) == before else None


def _parse_group_body(raw: Mapping[str, Any], path: str, issues: list[LintIssue]) -> dict[str, Any] | None:
    kinds = [kind for kind in GroupKind if kind.value in raw]
    if len(kinds) != 1:
        message = (
            "use either 'allOf' or 'anyOf', not both (nest one inside the other)"
            if kinds
            else "missing 'allOf' or 'anyOf' condition list"
        )
        _issue(issues, "empty_conditions" if not kinds else "both_all_and_any", path, message)
        return None
    kind = kinds[0]
    here = f"{path}.{kind.value}"
    items = raw[kind.value]
    if not isinstance(items, list) or not items:
        _issue(issues, "empty_conditions", here, f"'{kind.value}' must list at least one condition")
        return None
    conditions = [_parse_condition(item, f"{here}[{i}]", issues) for i, item in enumerate(items)]
    if any(c is None for c in conditions):
        return None
    return {"kind": kind, "conditions": tuple(conditions)}


def _parse_condition(raw: Any, path: str, issues: list[LintIssue]) -> dict[str, Any] | None:
    if isinstance(raw, Mapping) and "claim" not in raw and any(k.value in raw for k in GroupKind):
        return _parse_group(raw, path, issues)
    return _parse_claim_condition(raw, path, issues)


def _parse_claim_condition(raw: Any, path: str, issues: list[LintIssue]) -> dict[str, Any] | None:
    before = len(issues)
    if not isinstance(raw, Mapping):
        _issue(issues, "not_object", path, "a condition must be a JSON object")
        return None
    claim = raw.get("claim")
    if not isinstance(claim, str):
        _issue(
            issues,
            "invalid_claim",
            f"{path}.claim",
            "missing 'claim' (a dot path such as x-ms-isolation-tee.x-ms-attestation-type)",
        )
    else:
        problem = _claim_problem(claim)
        if problem:
            _issue(issues, "invalid_claim", f"{path}.claim", problem)
    if "condition" in raw and "value" in raw:
        _issue(
            issues,
            "legacy_condition",
            path,
            "the 'condition'/'value' form is the retired version-1.0 grammar; write {\"claim\": ..., \"equals\": ...}",
        )
        return None
    known = [op for op in Operator if op.value in raw]
    unknown = [key for key in raw if key != "claim" and key not in Operator._value2member_map_]
    for key in unknown:
        _issue(
            issues,
            "unknown_operator",
            f"{path}.{key}",
            f"unknown operator {key!r}; use one of {', '.join(op.value for op in Operator)}",
        )
    if not known and not unknown:
        _issue(
            issues,
            "missing_operator",
            path,
            f"claim condition has no operator ({', '.join(op.value for op in Operator)})",
        )
    if len(known) > 1:
        _issue(
            issues, "multiple_operators", path, f"one operator per condition, got {', '.join(op.value for op in known)}"
        )
    if len(known) == 1:
        problem = _value_problem(known[0], raw[known[0].value])
        if problem:
            _issue(issues, "invalid_value", f"{path}.{known[0].value}", problem)
    if len(issues) > before:
        return None
    return {"claim": claim, "operator": known[0], "value": raw[known[0].value]}


def _unknown_key(issues: list[LintIssue], path: str, key: str, allowed: Sequence[str]) -> None:
    where = key if path == "$" else f"{path}.{key}"
    _issue(issues, "unknown_field", where, f"unknown field {key!r}; expected {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------------------------

CVM_GUEST_CONDITIONS: tuple[ClaimCondition, ...] = (
    ClaimCondition.of(ATTESTATION_TYPE_CLAIM, Operator.EQUALS, "sevsnpvm"),
    ClaimCondition.of(COMPLIANCE_STATUS_CLAIM, Operator.EQUALS, "azure-compliant-cvm"),
)
"""The default: an SEV-SNP CVM that MAA's guest attestation judged azure-compliant."""


def parse_conditions(raw: Any) -> tuple[ClaimCondition | ConditionGroup, ...]:
    """A JSON list of conditions (SKR_RELEASE_CLAIMS); raises PolicyError naming each bad entry."""
    issues: list[LintIssue] = []
    if not isinstance(raw, list) or not raw:
        _issue(issues, "empty_conditions", "$", "expected a non-empty JSON list of claim conditions")
        raise PolicyError(issues)
    parsed = [_parse_condition(item, f"[{i}]", issues) for i, item in enumerate(raw)]
    if issues:
        raise PolicyError(issues)
    return tuple(
        ClaimCondition.model_validate(item) if "operator" in item else ConditionGroup.model_validate(item)
        for item in cast(list[dict[str, Any]], parsed)
    )


def build_policy(
    authority: str,
    conditions: Sequence[ClaimCondition | ConditionGroup] | None = None,
    *,
    kind: GroupKind = GroupKind.ALL_OF,
) -> ReleasePolicy:
    """One-authority policy; the default conditions are the CVM guest-token ones."""
    rule = AuthorityRule(authority=authority, kind=kind, conditions=tuple(conditions or CVM_GUEST_CONDITIONS))
    return ReleasePolicy(authorities=(rule,))


# ---------------------------------------------------------------------------------------------
# Codec and canonical comparison
# ---------------------------------------------------------------------------------------------


def policy_json_bytes(policy: ReleasePolicy) -> bytes:
    """Canonical compact JSON: what ``KeyReleasePolicy(encoded_policy=...)`` takes (the SDK base64url-encodes)."""
    return json.dumps(policy.to_json(), separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode("utf-8")


def encode_policy(policy: ReleasePolicy) -> str:
    """The REST ``release_policy.data`` value: base64url without padding."""
    return base64.urlsafe_b64encode(policy_json_bytes(policy)).rstrip(b"=").decode("ascii")


def decode_policy(data: str | bytes | Mapping[str, Any] | object) -> ReleasePolicy:
    """Raw JSON (bytes or text, as the SDK hands it back), base64url/base64 text, or a mapping.

    Raises PolicyError listing every grammar error with its path.
    """
    issues: list[LintIssue] = []
    parsed = _parse_policy(load_policy_document(data), issues)
    if parsed is None:
        raise PolicyError(issues)
    return ReleasePolicy.model_validate(parsed)


def load_policy_document(data: object) -> Any:
    """Untyped JSON document from text/bytes in any accepted encoding (parsed JSON passes through).

    Raises PolicyError when text is not JSON at all.
    """
    if not isinstance(data, str | bytes | bytearray):
        return data
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    text = raw.strip()
    if not text.startswith((b"{", b"[")):
        try:
            padded = text + b"=" * (-len(text) % 4)
            text = base64.b64decode(padded.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
        except (binascii.Error, ValueError):
            _fail("invalid_json", "the policy is neither JSON nor base64/base64url-encoded JSON")
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail("invalid_json", f"the policy is not valid JSON: {exc}")


def _fail(code: str, message: str) -> Any:
    raise PolicyError([LintIssue(severity=Severity.ERROR, code=code, path="$", message=message)])


def canonical_policy(policy: ReleasePolicy) -> ReleasePolicy:
    """Order-insensitive, authority-normalised form: two policies Key Vault treats alike compare equal."""

    def canon(node: ClaimCondition | ConditionGroup) -> ClaimCondition | ConditionGroup:
        if isinstance(node, ClaimCondition):
            return node
        return ConditionGroup(kind=node.kind, conditions=_sorted(canon(c) for c in node.conditions))

    rules = [
        AuthorityRule(
            authority=normalise_authority(rule.authority),
            kind=rule.kind,
            conditions=_sorted(canon(c) for c in rule.conditions),
        )
        for rule in policy.authorities
    ]
    unique = {json.dumps(r.to_json(), sort_keys=True): r for r in rules}
    return ReleasePolicy(version=policy.version, authorities=tuple(unique[k] for k in sorted(unique)))


def _sorted(nodes: Iterator[ClaimCondition | ConditionGroup]) -> tuple[ClaimCondition | ConditionGroup, ...]:
    unique = {json.dumps(n.to_json(), sort_keys=True): n for n in nodes}
    return tuple(unique[k] for k in sorted(unique))


def same_policy(left: ReleasePolicy, right: ReleasePolicy) -> bool:
    """True when an existing key's policy already is the desired one (ordering and slashes aside)."""
    return policy_json_bytes(canonical_policy(left)) == policy_json_bytes(canonical_policy(right))


def policy_fingerprint(policy: ReleasePolicy) -> str:
    """Short stable hash of the canonical form (for tags, logs and custom status)."""
    return hashlib.sha256(policy_json_bytes(canonical_policy(policy))).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Lint
# ---------------------------------------------------------------------------------------------


class LintReport(BaseModel):
    model_config = ConfigDict(frozen=True)
    issues: tuple[LintIssue, ...] = ()
    policy: ReleasePolicy | None = None

    @property
    def errors(self) -> tuple[LintIssue, ...]:
        return tuple(i for i in self.issues if i.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[LintIssue, ...]:
        return tuple(i for i in self.issues if i.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        return not self.errors


def lint_policy(source: ReleasePolicy | str | bytes | Mapping[str, Any] | object) -> LintReport:
    """Errors (grammar) first; warnings only for a policy that parses."""
    if isinstance(source, ReleasePolicy):
        policy = source
    else:
        try:
            document = load_policy_document(source)
        except PolicyError as exc:
            return LintReport(issues=exc.issues)
        issues: list[LintIssue] = []
        parsed = _parse_policy(document, issues)
        if parsed is None:
            return LintReport(issues=tuple(issues))
        policy = ReleasePolicy.model_validate(parsed)
    return LintReport(issues=tuple(_warnings(policy)), policy=policy)


def _warn(code: str, path: str, message: str) -> LintIssue:
    return LintIssue(severity=Severity.WARNING, code=code, path=path, message=message)


def _warnings(policy: ReleasePolicy) -> Iterator[LintIssue]:
    typed_rules: set[int] = set()
    for path, rule_index, condition in policy.claim_conditions():
        if condition.claim in (ATTESTATION_TYPE_CLAIM, "x-ms-attestation-type"):
            typed_rules.add(rule_index)
        message = _guest_token_mismatch(condition)
        if message:
            yield _warn("platform_claim_path", path, message)
    for index, rule in enumerate(policy.authorities):
        if index not in typed_rules:
            yield _warn(
                "no_attestation_type",
                f"anyOf[{index}]",
                f"authority {rule.authority} checks no attestation type: any TEE (or none) that this authority "
                f"attests could release the key; add {ATTESTATION_TYPE_CLAIM} equals sevsnpvm",
            )


def _guest_token_mismatch(condition: ClaimCondition) -> str | None:
    """Why a guest attestation token can never meet this top-level condition (the default-cvm-policy pitfall)."""
    claim = condition.claim
    if "." in claim or (condition.operator is Operator.EXISTS and _loose_bool(condition.value) is False):
        return None
    nested = f"{GUEST_TEE_PREFIX}{claim}"
    if claim == "x-ms-compliance-status" or claim.startswith("x-ms-sevsnpvm-"):
        return (
            f"top-level {claim!r} appears only in the platform (OS-disk) token; a guest attestation token carries "
            f"it as {nested!r}, so a release from inside the VM never meets this condition (the "
            f"--default-cvm-policy pitfall)"
        )
    if (
        claim == "x-ms-attestation-type"
        and condition.operator is Operator.EQUALS
        and condition.value != GUEST_TOP_LEVEL_ATTESTATION_TYPE
    ):
        return (
            f"a guest attestation token has top-level x-ms-attestation-type = {GUEST_TOP_LEVEL_ATTESTATION_TYPE!r}; "
            f"{json.dumps(condition.value)} is under {nested!r}, so this condition is never met from inside the VM"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


class DecisionReason(StrEnum):
    ALLOWED = "allowed"
    NO_ISSUER = "no_issuer"
    AUTHORITY_MISMATCH = "authority_mismatch"
    CLAIMS_UNMET = "claims_unmet"


class UnmetClaim(BaseModel):
    """A condition the token does not meet, with what was expected and what the token holds."""

    model_config = ConfigDict(frozen=True)
    path: str
    claim: str
    operator: Operator
    expected: Scalar
    found: bool
    actual: Scalar | None = None
    reason: str

    def describe(self) -> str:
        actual = json.dumps(self.actual) if self.found and self.actual is not None else self.reason
        return f"{self.claim} {self.operator.value} {json.dumps(self.expected)}: actual {actual} ({self.path})"


class ReleaseDecision(BaseModel):
    model_config = ConfigDict(frozen=True)
    allowed: bool
    reason: DecisionReason
    issuer: str | None = None
    authorities: tuple[str, ...] = ()
    matched_authority: str | None = None
    unmet: tuple[UnmetClaim, ...] = ()

    def summary(self) -> str:
        if self.allowed:
            return f"allowed by authority {self.matched_authority}"
        if self.reason is DecisionReason.NO_ISSUER:
            return "denied: the token has no 'iss' claim"
        if self.reason is DecisionReason.AUTHORITY_MISMATCH:
            return f"denied: issuer {self.issuer!r} is none of the policy authorities {', '.join(self.authorities)}"
        return "denied: " + "; ".join(u.describe() for u in self.unmet)


def lookup_claim(claims: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """(found, value) for a dot path; a literal key equal to the whole path wins over walking."""
    if path in claims:
        return True, claims[path]
    node: Any = claims
    for segment in path.split("."):
        if not isinstance(node, Mapping) or segment not in node:
            return False, None
        node = node[segment]
    return True, node


def evaluate_policy(policy: ReleasePolicy, claims: Mapping[str, Any], *, issuer: str | None = None) -> ReleaseDecision:
    """Decide like Key Vault would for a verified token with these claims (``iss`` unless ``issuer``)."""
    token_issuer = issuer if issuer is not None else claims.get("iss")
    authorities = tuple(rule.authority for rule in policy.authorities)
    if not isinstance(token_issuer, str) or not token_issuer.strip():
        return ReleaseDecision(allowed=False, reason=DecisionReason.NO_ISSUER, authorities=authorities)
    wanted = normalise_authority(token_issuer)
    unmet: list[UnmetClaim] = []
    matched: str | None = None
    for index, rule in enumerate(policy.authorities):
        if normalise_authority(rule.authority) != wanted:
            continue
        matched = matched or rule.authority
        failures: list[UnmetClaim] = []
        if _group_holds(rule.kind, rule.conditions, f"anyOf[{index}]", claims, failures):
            return ReleaseDecision(
                allowed=True,
                reason=DecisionReason.ALLOWED,
                issuer=token_issuer,
                authorities=authorities,
                matched_authority=rule.authority,
            )
        unmet.extend(failures)
    return ReleaseDecision(
        allowed=False,
        reason=DecisionReason.CLAIMS_UNMET if matched else DecisionReason.AUTHORITY_MISMATCH,
        issuer=token_issuer,
        authorities=authorities,
        matched_authority=matched,
        unmet=tuple(unmet),
    )


def _group_holds(
    kind: GroupKind,
    conditions: Sequence[ClaimCondition | ConditionGroup],
    path: str,
    claims: Mapping[str, Any],
    failures: list[UnmetClaim],
) -> bool:
    local: list[UnmetClaim] = []
    results = []
    for index, condition in enumerate(conditions):
        here = f"{path}.{kind.value}[{index}]"
        if isinstance(condition, ClaimCondition):
            unmet = _check_claim(condition, here, claims)
            if unmet is not None:
                local.append(unmet)
            results.append(unmet is None)
        else:
            results.append(_group_holds(condition.kind, condition.conditions, here, claims, local))
    holds = all(results) if kind is GroupKind.ALL_OF else any(results)
    if not holds:
        failures.extend(local)
    return holds


def _check_claim(condition: ClaimCondition, path: str, claims: Mapping[str, Any]) -> UnmetClaim | None:
    found, actual = lookup_claim(claims, condition.claim)

    def unmet(reason: str) -> UnmetClaim:
        scalar = actual if found and isinstance(actual, bool | int | float | str) else None
        return UnmetClaim(
            path=path,
            claim=condition.claim,
            operator=condition.operator,
            expected=condition.value,
            found=found,
            actual=scalar,
            reason=reason,
        )

    if condition.operator is Operator.EXISTS:
        wanted = _loose_bool(condition.value)
        if found == wanted:
            return None
        return unmet("claim is present" if found else "claim is missing")
    if not found:
        return unmet("claim is missing")
    if isinstance(actual, Mapping | list):
        return unmet(f"claim is {'an object' if isinstance(actual, Mapping) else 'an array'}, not a value")
    check = _COMPARISONS[condition.operator]
    return None if check(actual, condition.value) else unmet(_FAILURE_TEXT[condition.operator])


def _loose_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _loose_number(value: Any) -> Decimal | None:
    """Numbers and numeric strings; ``str(True)``/``str(None)`` are not numeric, so those fall out too."""
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        left = _loose_bool(actual)
        return left is not None and left == _loose_bool(expected)
    if isinstance(actual, str) and isinstance(expected, str):
        return actual == expected
    left_number, right_number = _loose_number(actual), _loose_number(expected)
    return left_number is not None and left_number == right_number


def _order(actual: Any, expected: Any) -> int | None:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return None
    left, right = _loose_number(actual), _loose_number(expected)
    if left is not None and right is not None:
        return (left > right) - (left < right)
    if isinstance(actual, str) and isinstance(expected, str):
        return (actual > expected) - (actual < expected)
    return None


def _ordered(test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    def check(actual: Any, expected: Any) -> bool:
        order = _order(actual, expected)
        return order is not None and test(order)

    return check


_COMPARISONS: dict[Operator, Callable[[Any, Any], bool]] = {
    Operator.EQUALS: _equal,
    Operator.NOT_EQUALS: lambda actual, expected: not _equal(actual, expected),
    Operator.LESS: _ordered(lambda o: o < 0),
    Operator.LESS_OR_EQUALS: _ordered(lambda o: o <= 0),
    Operator.GREATER: _ordered(lambda o: o > 0),
    Operator.GREATER_OR_EQUALS: _ordered(lambda o: o >= 0),
}

_FAILURE_TEXT: dict[Operator, str] = {
    Operator.EQUALS: "value differs",
    Operator.NOT_EQUALS: "value is the excluded one",
    Operator.LESS: "value is not less (or not comparable)",
    Operator.LESS_OR_EQUALS: "value is greater (or not comparable)",
    Operator.GREATER: "value is not greater (or not comparable)",
    Operator.GREATER_OR_EQUALS: "value is less (or not comparable)",
}
