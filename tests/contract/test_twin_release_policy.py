"""The twin's release-policy evaluator against hand-written cases (skr_flow.md §6)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localdev.twin.policy_eval import (
    PolicyFormatError,
    compare,
    evaluate,
    normalise_authority,
    parse_policy,
)

MAA = "https://sharedweu.weu.attest.azure.net"

GUEST_CLAIMS: dict[str, Any] = {
    "iss": MAA,
    "x-ms-attestation-type": "azurevm",
    "secureboot": True,
    "x-ms-azurevm-osversion-major": 20,
    "x-ms-isolation-tee": {
        "x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "azure-compliant-cvm",
        "x-ms-sevsnpvm-is-debuggable": False,
        "x-ms-sevsnpvm-guestsvn": 7,
    },
}


def cvm_policy(authority: str = MAA, *conditions: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "1.0.0",
        "anyOf": [
            {
                "authority": authority,
                "allOf": list(conditions)
                or [
                    {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                    {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
                ],
            }
        ],
    }


def test_the_documented_cvm_policy_releases_to_a_compliant_guest_token() -> None:
    result = evaluate(parse_policy(json.dumps(cvm_policy())), GUEST_CLAIMS)
    assert result.allowed and result.authority_matched and result.unmet == ()


def test_a_noncompliant_status_is_denied_and_the_claim_is_named() -> None:
    claims = json.loads(json.dumps(GUEST_CLAIMS))
    claims["x-ms-isolation-tee"]["x-ms-compliance-status"] = "azure-non-compliant-cvm"
    result = evaluate(cvm_policy(), claims)
    assert not result.allowed
    assert result.unmet == ("x-ms-isolation-tee.x-ms-compliance-status",)
    assert "x-ms-isolation-tee.x-ms-compliance-status" in result.describe()


def test_top_level_platform_claims_do_not_match_a_guest_token() -> None:
    # skr_flow.md §10.3: the az CLI "default CVM policy" tests top-level claims.
    policy = cvm_policy(MAA, {"claim": "x-ms-compliance-status", "equals": "azure-compliant-cvm"})
    result = evaluate(policy, GUEST_CLAIMS)
    assert not result.allowed and result.unmet == ("x-ms-compliance-status",)


@pytest.mark.parametrize("authority", [MAA + "/", MAA.upper().replace("HTTPS", "https"), MAA])
def test_authority_matches_issuer_ignoring_trailing_slash_and_host_case(authority: str) -> None:
    assert evaluate(cvm_policy(authority), GUEST_CLAIMS).allowed


def test_another_authority_is_not_considered() -> None:
    result = evaluate(cvm_policy("https://sharedeus2.eus2.attest.azure.net"), GUEST_CLAIMS)
    assert not result.allowed and not result.authority_matched
    assert "issuer" in result.describe()


def test_only_the_branch_of_the_matching_authority_is_used() -> None:
    policy = {
        "version": "1.0.0",
        "anyOf": [
            {"authority": "https://other.attest.azure.net", "allOf": [{"claim": "secureboot", "equals": True}]},
            {"authority": MAA, "allOf": [{"claim": "x-ms-attestation-type", "equals": "sevsnpvm"}]},
        ],
    }
    result = evaluate(policy, GUEST_CLAIMS)
    assert not result.allowed and result.unmet == ("x-ms-attestation-type",)


def test_nested_any_of_inside_all_of_like_the_data_disk_policy() -> None:
    policy = cvm_policy(
        MAA,
        {
            "anyOf": [
                {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "tdxvm"},
                {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
            ]
        },
        {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
    )
    assert evaluate(policy, GUEST_CLAIMS).allowed
    tdx_only = cvm_policy(MAA, {"anyOf": [{"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "tdxvm"}]})
    assert evaluate(tdx_only, GUEST_CLAIMS).unmet == ("x-ms-isolation-tee.x-ms-attestation-type",)


def test_authority_level_any_of_needs_one_condition() -> None:
    policy = {
        "version": "1.0.0",
        "anyOf": [
            {
                "authority": MAA,
                "anyOf": [
                    {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
                    {"claim": "secureboot", "equals": "true"},
                ],
            }
        ],
    }
    assert evaluate(policy, GUEST_CLAIMS).allowed


@pytest.mark.parametrize(
    ("operator", "actual", "expected", "holds"),
    [
        ("equals", True, "true", True),
        ("equals", True, "True", True),
        ("equals", False, "true", False),
        ("equals", "true", True, True),
        ("equals", "sevsnpvm", "SEVSNPVM", False),
        ("equals", 20, "20", True),
        ("equals", 20, 20.0, True),
        ("equals", "x", 1, False),
        ("notEquals", "sevsnpvm", "tdxvm", True),
        ("notEquals", True, "true", False),
        ("less", 7, 8, True),
        ("less", 8, 8, False),
        ("lessOrEquals", 8, 8, True),
        ("greater", "10", 9, True),
        ("greater", 9, 10, False),
        ("greaterOrEquals", 7, 7, True),
        ("greaterOrEquals", "abc", "abd", False),
        ("less", "abc", "abd", True),
        ("greater", True, 0, False),
        ("exists", "anything", True, True),
        ("exists", False, "true", True),
    ],
)
def test_operators(operator: str, actual: Any, expected: Any, holds: bool) -> None:
    assert compare(operator, actual, expected) is holds


def test_missing_claim_is_unmet_for_every_comparison_and_exists_false_holds() -> None:
    for operator in ("equals", "notEquals", "less", "lessOrEquals", "greater", "greaterOrEquals"):
        policy = cvm_policy(MAA, {"claim": "x-ms-isolation-tee.no-such-claim", operator: "1"})
        assert evaluate(policy, GUEST_CLAIMS).unmet == ("x-ms-isolation-tee.no-such-claim",), operator
    assert not evaluate(cvm_policy(MAA, {"claim": "nope", "exists": True}), GUEST_CLAIMS).allowed
    assert evaluate(cvm_policy(MAA, {"claim": "nope", "exists": False}), GUEST_CLAIMS).allowed
    assert not evaluate(cvm_policy(MAA, {"claim": "secureboot", "exists": False}), GUEST_CLAIMS).allowed


def test_object_claims_are_never_equal_to_scalars() -> None:
    policy = cvm_policy(MAA, {"claim": "x-ms-isolation-tee", "equals": "sevsnpvm"})
    assert not evaluate(policy, GUEST_CLAIMS).allowed


def test_token_without_issuer_matches_nothing() -> None:
    claims = {k: v for k, v in GUEST_CLAIMS.items() if k != "iss"}
    assert not evaluate(cvm_policy(), claims).authority_matched


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"not json", "not valid JSON"),
        ("[]", "JSON object"),
        ({"anyOf": []}, "missing 'version'"),
        ({"version": "2.0", "anyOf": []}, "unsupported version"),
        ({"version": "1.0.0", "anyOf": []}, "non-empty array"),
        ({"version": "1.0.0", "anyOf": [{"allOf": [{"claim": "a", "equals": 1}]}]}, "'authority'"),
        ({"version": "1.0.0", "anyOf": [{"authority": MAA}]}, "exactly one of 'allOf' or 'anyOf'"),
        (
            {"version": "1.0.0", "anyOf": [{"authority": MAA, "allOf": [{"claim": "a"}], "anyOf": []}]},
            "exactly one of",
        ),
        ({"version": "1.0.0", "anyOf": [{"authority": MAA, "allOf": [{"claim": "a"}]}]}, "exactly one operator"),
        (
            {"version": "1.0.0", "anyOf": [{"authority": MAA, "allOf": [{"claim": "a", "equals": {"x": 1}}]}]},
            "string, number or boolean",
        ),
        ({"version": "1.0.0", "anyOf": [{"authority": MAA, "allOf": [{"claim": "", "equals": 1}]}]}, "'claim'"),
        ({"version": "1.0.0", "anyOf": [{"authority": MAA, "allOf": []}]}, "non-empty array"),
        ({"version": "1.0.0", "anyOf": [{"authority": MAA, "allOf": [{"anyOf": "x"}]}]}, "non-empty array"),
    ],
)
def test_malformed_policies_are_rejected_with_a_specific_message(document: Any, message: str) -> None:
    with pytest.raises(PolicyFormatError, match=message):
        parse_policy(document if isinstance(document, (bytes, str)) else json.dumps(document))


def test_normalise_authority() -> None:
    assert normalise_authority("HTTPS://Shared.Attest.Azure.NET/") == "https://shared.attest.azure.net"
    assert normalise_authority("https://127.0.0.1:8443/") == "https://127.0.0.1:8443"


@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.booleans(), st.integers(-5, 5), st.sampled_from(["x", "y", "true", "3"])),
    ),
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.booleans(), st.integers(-5, 5), st.sampled_from(["x", "y", "true", "3"])),
)
def test_all_of_is_the_conjunction_and_any_of_the_disjunction(
    claims: dict[str, Any], claim: str, value: Any
) -> None:
    claims = {"iss": MAA, **claims}
    single = {"claim": claim, "equals": value}
    other = {"claim": "a", "notEquals": value}
    expected_single = compare("equals", claims.get(claim, object()), value) if claim in claims else False
    assert evaluate(cvm_policy(MAA, single), claims).allowed is expected_single
    both = evaluate(cvm_policy(MAA, single, other), claims).allowed
    either = evaluate({"version": "1.0.0", "anyOf": [{"authority": MAA, "anyOf": [single, other]}]}, claims).allowed
    other_holds = evaluate(cvm_policy(MAA, other), claims).allowed
    assert both is (expected_single and other_holds)
    assert either is (expected_single or other_holds)
