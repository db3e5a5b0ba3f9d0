"""Release policy model, builder, codec, canonical comparison and lint."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from pydantic import ValidationError

from skr.policy import (
    ATTESTATION_TYPE_CLAIM,
    COMPLIANCE_STATUS_CLAIM,
    CVM_GUEST_CONDITIONS,
    AuthorityRule,
    ClaimCondition,
    ConditionGroup,
    GroupKind,
    Operator,
    PolicyError,
    ReleasePolicy,
    Severity,
    build_policy,
    canonical_policy,
    decode_policy,
    encode_policy,
    lint_policy,
    normalise_authority,
    parse_conditions,
    policy_fingerprint,
    policy_json_bytes,
    same_policy,
)

from .guest_token import AUTHORITY

GUEST_POLICY_WIRE = {
    "version": "1.0.0",
    "anyOf": [
        {
            "authority": AUTHORITY,
            "allOf": [
                {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
            ],
        }
    ],
}


def policy(*conditions: dict[str, Any], kind: str = "allOf", authority: str = AUTHORITY) -> dict[str, Any]:
    return {"version": "1.0.0", "anyOf": [{"authority": authority, kind: list(conditions)}]}


# --- model and builder -------------------------------------------------------------------------


def test_default_builder_is_the_cvm_guest_policy() -> None:
    built = build_policy(AUTHORITY)
    assert built.to_json() == GUEST_POLICY_WIRE
    assert [c.claim for c in CVM_GUEST_CONDITIONS] == [ATTESTATION_TYPE_CLAIM, COMPLIANCE_STATUS_CLAIM]


def test_builder_with_custom_conditions_and_any_of() -> None:
    conditions = parse_conditions(
        [
            {"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable", "equals": False},
            {"anyOf": [{"claim": "a", "exists": True}, {"claim": "b", "greaterOrEquals": 2}]},
        ]
    )
    built = build_policy("https://maa.example/", conditions, kind=GroupKind.ANY_OF)
    rule = built.authorities[0]
    assert rule.kind is GroupKind.ANY_OF
    assert isinstance(rule.conditions[1], ConditionGroup)
    assert rule.to_json()["anyOf"][1] == {
        "anyOf": [{"claim": "a", "exists": True}, {"claim": "b", "greaterOrEquals": 2}]
    }


@pytest.mark.parametrize("operator", list(Operator))
def test_every_operator_round_trips_through_the_wire_form(operator: Operator) -> None:
    value: Any = True if operator is Operator.EXISTS else 7
    wire = {"claim": "x.y", operator.value: value}
    condition = ClaimCondition.model_validate(wire)
    assert (condition.claim, condition.operator, condition.value) == ("x.y", operator, value)
    assert condition.to_json() == wire


def test_nested_groups_parse_to_typed_nodes() -> None:
    wire = policy(
        {"claim": "a", "equals": "1"},
        {
            "anyOf": [
                {"allOf": [{"claim": "b", "less": 3}, {"claim": "c", "notEquals": "x"}]},
                {"claim": "d", "exists": False},
            ]
        },
    )
    parsed = ReleasePolicy.model_validate(wire)
    group = parsed.authorities[0].conditions[1]
    assert isinstance(group, ConditionGroup) and group.kind is GroupKind.ANY_OF
    inner = group.conditions[0]
    assert isinstance(inner, ConditionGroup) and inner.kind is GroupKind.ALL_OF
    assert parsed.to_json() == wire
    assert [path for path, _, _ in parsed.claim_conditions()] == [
        "anyOf[0].allOf[0]",
        "anyOf[0].allOf[1].anyOf[0].allOf[0]",
        "anyOf[0].allOf[1].anyOf[0].allOf[1]",
        "anyOf[0].allOf[1].anyOf[1]",
    ]


def test_programmatic_construction_validates_too() -> None:
    with pytest.raises(ValidationError, match="https"):
        AuthorityRule(authority="http://maa.example", conditions=CVM_GUEST_CONDITIONS)
    with pytest.raises(ValidationError):
        AuthorityRule(authority=AUTHORITY, conditions=())
    with pytest.raises(ValidationError, match="exists"):
        ClaimCondition.of("a", Operator.EXISTS, 3)
    with pytest.raises(ValidationError, match="array paths"):
        ClaimCondition.of("a[0]", "equals", 3)
    with pytest.raises(ValidationError, match="unknown operator"):
        ClaimCondition.model_validate({"claim": "a", "equal": 1})
    with pytest.raises(ValidationError, match="not both"):
        ConditionGroup.model_validate(
            {"allOf": [{"claim": "a", "exists": True}], "anyOf": [{"claim": "a", "exists": True}]}
        )
    with pytest.raises(ValidationError, match="no host"):
        AuthorityRule.model_validate({"authority": "https://", "allOf": [{"claim": "a", "exists": True}]})
    with pytest.raises(ValidationError, match="unknown version"):
        ReleasePolicy.model_validate({**GUEST_POLICY_WIRE, "version": "1.0.2"})


def test_wire_nodes_validate_on_their_own() -> None:
    group = ConditionGroup.model_validate({"anyOf": [{"claim": "a", "equals": 1}, {"claim": "b", "exists": False}]})
    assert group.kind is GroupKind.ANY_OF and len(group.conditions) == 2
    rule = AuthorityRule.model_validate({"authority": AUTHORITY, "anyOf": [{"claim": "a", "less": 2}]})
    assert rule.kind is GroupKind.ANY_OF and rule.to_json()["anyOf"] == [{"claim": "a", "less": 2}]
    assert ReleasePolicy(authorities=(rule,)).to_json()["anyOf"][0] == rule.to_json()


def test_parse_conditions_rejects_empty_and_names_bad_entries() -> None:
    with pytest.raises(PolicyError, match="non-empty JSON list"):
        parse_conditions([])
    with pytest.raises(PolicyError) as info:
        parse_conditions([{"claim": "a", "equals": "b"}, {"claim": "c", "greater": [1]}])
    assert [(i.code, i.path) for i in info.value.issues] == [("invalid_value", "[1].greater")]


# --- codec ---------------------------------------------------------------------------------------


def test_encode_is_unpadded_base64url_of_canonical_json() -> None:
    built = build_policy(AUTHORITY)
    encoded = encode_policy(built)
    assert "=" not in encoded and "+" not in encoded and "/" not in encoded
    raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    assert raw == policy_json_bytes(built)
    assert json.loads(raw) == GUEST_POLICY_WIRE
    assert b" " not in raw  # compact: what the SDK's KeyReleasePolicy(encoded_policy=...) gets


@pytest.mark.parametrize(
    "form",
    [
        "raw-bytes",
        "raw-text",
        "base64url",
        "base64-padded",
        "mapping",
    ],
)
def test_decode_accepts_every_transport_form(form: str) -> None:
    built = build_policy(AUTHORITY)
    pretty = json.dumps(GUEST_POLICY_WIRE, indent=2)
    data: Any = {
        "raw-bytes": policy_json_bytes(built),
        "raw-text": pretty,
        "base64url": encode_policy(built),
        "base64-padded": base64.b64encode(pretty.encode()).decode(),
        "mapping": GUEST_POLICY_WIRE,
    }[form]
    assert decode_policy(data) == built


def test_decode_rejects_garbage_with_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="neither JSON nor base64"):
        decode_policy("not a policy!")
    with pytest.raises(PolicyError, match="not valid JSON"):
        decode_policy(base64.urlsafe_b64encode(b"{nope").decode())
    with pytest.raises(PolicyError) as info:
        decode_policy({"version": "1.0.0", "anyOf": []})
    assert info.value.issues[0].code == "no_authority"


def test_canonical_form_ignores_order_slashes_and_duplicates() -> None:
    left = ReleasePolicy.model_validate(
        policy({"claim": "a", "equals": 1}, {"claim": "b", "equals": 2}, authority="https://MAA.example/")
    )
    right = ReleasePolicy.model_validate(
        {
            "version": "1.0.0",
            "anyOf": [
                {
                    "authority": "https://maa.example",
                    "allOf": [{"claim": "b", "equals": 2}, {"claim": "a", "equals": 1}],
                },
                {
                    "authority": "https://maa.example",
                    "allOf": [{"claim": "a", "equals": 1}, {"claim": "b", "equals": 2}],
                },
            ],
        }
    )
    assert same_policy(left, right)
    assert policy_fingerprint(left) == policy_fingerprint(right)
    assert canonical_policy(left).authorities[0].authority == "https://maa.example"
    different = ReleasePolicy.model_validate(policy({"claim": "a", "equals": 1}, {"claim": "b", "equals": 3}))
    assert not same_policy(left, different)
    kind_differs = ReleasePolicy.model_validate(
        policy({"claim": "a", "equals": 1}, {"claim": "b", "equals": 2}, kind="anyOf", authority="https://maa.example")
    )
    assert not same_policy(left, kind_differs)


def test_normalise_authority() -> None:
    assert normalise_authority("HTTPS://SharedWEU.weu.attest.azure.net/") == "https://sharedweu.weu.attest.azure.net"
    assert normalise_authority("https://h.example/tenant/") == "https://h.example/tenant"
    assert normalise_authority("not-a-url/") == "not-a-url"


# --- lint ----------------------------------------------------------------------------------------


def codes(report_source: Any) -> list[tuple[str, str, str]]:
    report = lint_policy(report_source)
    return [(i.severity.value, i.code, i.path) for i in report.issues]


def test_the_guest_policy_is_clean() -> None:
    report = lint_policy(GUEST_POLICY_WIRE)
    assert report.ok and report.issues == ()
    assert report.policy == build_policy(AUTHORITY)
    assert lint_policy(build_policy(AUTHORITY)).issues == ()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"version": "1.0.0", "anyOf": []}, [("error", "no_authority", "anyOf")]),
        ({"version": "1.0.0"}, [("error", "no_authority", "anyOf")]),
        (
            {"version": "1.0.0", "allOf": [{"authority": AUTHORITY}]},
            [("error", "unknown_field", "allOf"), ("error", "no_authority", "$")],
        ),
        (
            {"version": "1.0.0", "anyOf": [{"allOf": [{"claim": "a", "exists": True}]}]},
            [("error", "no_authority", "anyOf[0].authority")],
        ),
        (
            policy({"claim": "a", "exists": True}, authority="http://maa.example"),
            [("error", "authority_not_https", "anyOf[0].authority")],
        ),
        (policy(), [("error", "empty_conditions", "anyOf[0].allOf")]),
        (policy({"anyOf": []}), [("error", "empty_conditions", "anyOf[0].allOf[0].anyOf")]),
        (
            {"version": "1.0.0", "anyOf": [{"authority": AUTHORITY}]},
            [("error", "empty_conditions", "anyOf[0]")],
        ),
        (policy({"claim": "a", "equal": "x"}), [("error", "unknown_operator", "anyOf[0].allOf[0].equal")]),
        (policy({"claim": "a", "matches": "x.*"}), [("error", "unknown_operator", "anyOf[0].allOf[0].matches")]),
        (policy({"claim": "a"}), [("error", "missing_operator", "anyOf[0].allOf[0]")]),
        (policy({"claim": "a", "equals": 1, "less": 2}), [("error", "multiple_operators", "anyOf[0].allOf[0]")]),
        (policy({"claim": "a", "equals": None}), [("error", "invalid_value", "anyOf[0].allOf[0].equals")]),
        (policy({"claim": "a", "exists": "maybe"}), [("error", "invalid_value", "anyOf[0].allOf[0].exists")]),
        (policy({"claim": "", "equals": 1}), [("error", "invalid_claim", "anyOf[0].allOf[0].claim")]),
        (policy({"claim": "a..b", "equals": 1}), [("error", "invalid_claim", "anyOf[0].allOf[0].claim")]),
        (policy({"equals": 1}), [("error", "invalid_claim", "anyOf[0].allOf[0].claim")]),
        (
            policy({"claim": "a", "condition": "equals", "value": "x"}),
            [("error", "legacy_condition", "anyOf[0].allOf[0]")],
        ),
        (policy("just a string"), [("error", "not_object", "anyOf[0].allOf[0]")]),
        ({**GUEST_POLICY_WIRE, "version": "1.0.2"}, [("error", "unknown_version", "version")]),
        ({**GUEST_POLICY_WIRE, "version": None}, [("error", "missing_version", "version")]),
        ({"anyOf": GUEST_POLICY_WIRE["anyOf"]}, [("error", "missing_version", "version")]),
        ([GUEST_POLICY_WIRE], [("error", "not_object", "$")]),
        (b"{not json", [("error", "invalid_json", "$")]),
        (
            {
                "version": "1.0.0",
                "anyOf": [{**GUEST_POLICY_WIRE["anyOf"][0], "anyOf": [{"claim": "a", "exists": True}]}],
            },
            [("error", "both_all_and_any", "anyOf[0]")],
        ),
        ({**GUEST_POLICY_WIRE, "contentType": "x"}, [("error", "unknown_field", "contentType")]),
        (
            {"version": "1.0.0", "anyOf": [{**GUEST_POLICY_WIRE["anyOf"][0], "immutable": True}]},
            [("error", "unknown_field", "anyOf[0].immutable")],
        ),
        (
            policy({"allOf": [{"claim": "a", "exists": True}], "note": 1}),
            [("error", "unknown_field", "anyOf[0].allOf[0].note")],
        ),
        ({"version": "1.0.0", "anyOf": ["x"]}, [("error", "not_object", "anyOf[0]")]),
        (
            policy({"claim": "a", "exists": True}, authority="https://maa.example/?tenant=x"),
            [("error", "authority_invalid", "anyOf[0].authority")],
        ),
    ],
)
def test_lint_errors_name_the_class_and_path(source: Any, expected: list[tuple[str, str, str]]) -> None:
    report = lint_policy(source)
    assert [(i.severity.value, i.code, i.path) for i in report.issues] == expected
    assert not report.ok and report.policy is None
    with pytest.raises(PolicyError):
        decode_policy(source)


def test_lint_collects_every_error_in_one_pass() -> None:
    source = {
        "version": "1.0.2",
        "anyOf": [
            {"authority": "http://a", "allOf": [{"claim": "a", "equal": 1}, {"anyOf": []}]},
            {"authority": AUTHORITY, "allOf": [{"claim": "b", "greater": {"x": 1}}]},
        ],
    }
    assert {code for _, code, _ in codes(source)} == {
        "unknown_version",
        "authority_not_https",
        "unknown_operator",
        "empty_conditions",
        "invalid_value",
    }


def test_default_cvm_policy_pitfall_is_warned() -> None:
    # az keyvault key create --default-cvm-policy: top-level compliance status (platform token).
    report = lint_policy(policy({"claim": "x-ms-compliance-status", "equals": "azure-compliant-cvm"}))
    assert report.ok
    assert [(i.code, i.path) for i in report.warnings] == [
        ("platform_claim_path", "anyOf[0].allOf[0]"),
        ("no_attestation_type", "anyOf[0]"),
    ]
    assert "x-ms-isolation-tee.x-ms-compliance-status" in report.warnings[0].message
    assert all(i.severity is Severity.WARNING for i in report.issues)


def test_top_level_attestation_type_other_than_azurevm_is_warned() -> None:
    report = lint_policy(
        policy(
            {
                "anyOf": [
                    {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
                    {"claim": "x-ms-attestation-type", "equals": "tdxvm"},
                ]
            },
            {"claim": "x-ms-sevsnpvm-is-debuggable", "equals": False},
        )
    )
    assert [(i.code, i.path) for i in report.warnings] == [
        ("platform_claim_path", "anyOf[0].allOf[0].anyOf[0]"),
        ("platform_claim_path", "anyOf[0].allOf[0].anyOf[1]"),
        ("platform_claim_path", "anyOf[0].allOf[1]"),
    ]


def test_satisfiable_top_level_claims_are_not_warned() -> None:
    report = lint_policy(
        policy(
            {"claim": "x-ms-attestation-type", "equals": "azurevm"},
            {"claim": "x-ms-compliance-status", "exists": False},
            {"claim": "secureboot", "equals": True},
            {"claim": ATTESTATION_TYPE_CLAIM, "equals": "sevsnpvm"},
        )
    )
    assert report.issues == ()


def test_missing_attestation_type_is_warned_per_authority() -> None:
    source = {
        "version": "1.0.0",
        "anyOf": [
            GUEST_POLICY_WIRE["anyOf"][0],
            {
                "authority": "https://other.example",
                "allOf": [{"claim": COMPLIANCE_STATUS_CLAIM, "equals": "azure-compliant-cvm"}],
            },
        ],
    }
    assert codes(source) == [("warning", "no_attestation_type", "anyOf[1]")]
