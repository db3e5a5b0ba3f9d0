"""Evaluating policies the way Key Vault does: operators, nesting, issuers and the §6 sample policies."""

from __future__ import annotations

from typing import Any

import pytest

from skr.policy import (
    DecisionReason,
    Operator,
    ReleasePolicy,
    build_policy,
    evaluate_policy,
    lookup_claim,
)

from .guest_token import AUTHORITY, guest_claims


def one(condition: dict[str, Any], authority: str = AUTHORITY) -> ReleasePolicy:
    return ReleasePolicy.model_validate({"version": "1.0.0", "anyOf": [{"authority": authority, "allOf": [condition]}]})


def allowed(condition: dict[str, Any], claims: dict[str, Any]) -> bool:
    return evaluate_policy(one(condition), {"iss": AUTHORITY, **claims}).allowed


# --- operators -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operator", "expected", "actual", "result"),
    [
        ("equals", "sevsnpvm", "sevsnpvm", True),
        ("equals", "sevsnpvm", "SEVSNPVM", False),  # strings compare exactly
        ("equals", True, True, True),
        ("equals", "true", True, True),  # lenient bool/string (the .NET SDK test)
        ("equals", True, "TRUE", True),
        ("equals", "false", True, False),
        ("equals", False, 0, False),  # a number is not a boolean
        ("equals", 3, 3.0, True),
        ("equals", 3, "3", True),  # numeric string against a number
        ("equals", "3", "3.0", False),  # two strings: exact
        ("equals", 3, "three", False),
        ("equals", "null", None, False),  # a JSON null claim equals nothing
        ("equals", 0, None, False),
        ("greater", -1, None, False),
        ("notEquals", "tdxvm", "sevsnpvm", True),
        ("notEquals", "sevsnpvm", "sevsnpvm", False),
        ("notEquals", "false", False, False),
        ("less", 5, 4, True),
        ("less", 5, 5, False),
        ("less", "10", "9", True),  # numeric strings compare as numbers
        ("lessOrEquals", 5, 5, True),
        ("lessOrEquals", 5, 6, False),
        ("greater", 7, 8, True),
        ("greater", 7, 7, False),
        ("greater", 2, "3", True),
        ("greaterOrEquals", 7, 7, True),
        ("greaterOrEquals", 7.5, 7, False),
        ("greaterOrEquals", "b", "c", True),  # two non-numeric strings: lexicographic
        ("greater", "b", "a", False),
        ("greater", 1, True, False),  # booleans are not ordered
        ("less", True, 0, False),
        ("greater", 1, "x", False),  # number vs non-numeric string: not comparable
        ("exists", True, "anything", True),
        ("exists", "true", 0, True),
        ("exists", False, "anything", False),
    ],
)
def test_operator_semantics(operator: str, expected: Any, actual: Any, result: bool) -> None:
    assert allowed({"claim": "c", operator: expected}, {"c": actual}) is result


@pytest.mark.parametrize("operator", [op for op in Operator if op is not Operator.EXISTS])
def test_a_missing_claim_meets_no_comparison(operator: Operator) -> None:
    decision = evaluate_policy(one({"claim": "nope.deeper", operator.value: 1}), {"iss": AUTHORITY})
    assert not decision.allowed
    (unmet,) = decision.unmet
    assert (unmet.claim, unmet.found, unmet.actual, unmet.reason) == ("nope.deeper", False, None, "claim is missing")


def test_exists_false_is_met_only_by_absence() -> None:
    assert allowed({"claim": "debug", "exists": False}, {})
    assert allowed({"claim": "debug", "exists": "false"}, {})
    decision = evaluate_policy(one({"claim": "debug", "exists": False}), {"iss": AUTHORITY, "debug": 1})
    assert decision.unmet[0].reason == "claim is present"


@pytest.mark.parametrize(("actual", "kind"), [({"a": 1}, "an object"), ([1, 2], "an array")])
def test_object_and_array_claims_never_compare(actual: Any, kind: str) -> None:
    decision = evaluate_policy(one({"claim": "c", "equals": "x"}), {"iss": AUTHORITY, "c": actual})
    assert decision.unmet[0].reason == f"claim is {kind}, not a value"
    assert decision.unmet[0].found and decision.unmet[0].actual is None
    assert allowed({"claim": "c", "exists": True}, {"c": actual})


def test_dot_paths_walk_objects_and_a_literal_key_wins() -> None:
    claims = {"a": {"b": {"c": 1}}, "x.y": "literal", "x": {"y": "nested"}}
    assert lookup_claim(claims, "a.b.c") == (True, 1)
    assert lookup_claim(claims, "x.y") == (True, "literal")
    assert lookup_claim(claims, "a.q") == (False, None)
    assert allowed({"claim": "a.b.c", "equals": 1}, claims)
    assert not allowed({"claim": "a.b.c.d", "exists": True}, claims)
    assert not allowed({"claim": "a.b", "equals": 1}, claims)


# --- nesting -------------------------------------------------------------------------------------


def test_all_of_needs_every_condition_and_names_every_unmet_claim() -> None:
    decision = evaluate_policy(build_policy(AUTHORITY), {"iss": AUTHORITY, "x-ms-isolation-tee": {}})
    assert decision.reason is DecisionReason.CLAIMS_UNMET
    assert [(u.claim, u.path) for u in decision.unmet] == [
        ("x-ms-isolation-tee.x-ms-attestation-type", "anyOf[0].allOf[0]"),
        ("x-ms-isolation-tee.x-ms-compliance-status", "anyOf[0].allOf[1]"),
    ]


def test_any_of_needs_one_branch_and_reports_all_branches_when_none_holds() -> None:
    policy = ReleasePolicy.model_validate(
        {
            "version": "1.0.0",
            "anyOf": [
                {
                    "authority": AUTHORITY,
                    "anyOf": [
                        {"claim": "t", "equals": "sevsnpvm"},
                        {"allOf": [{"claim": "t", "equals": "tdxvm"}, {"claim": "v", "greaterOrEquals": 2}]},
                    ],
                }
            ],
        }
    )
    assert evaluate_policy(policy, {"iss": AUTHORITY, "t": "sevsnpvm"}).allowed
    assert evaluate_policy(policy, {"iss": AUTHORITY, "t": "tdxvm", "v": 2}).allowed
    decision = evaluate_policy(policy, {"iss": AUTHORITY, "t": "tdxvm", "v": 1})
    assert [(u.path, u.expected, u.actual) for u in decision.unmet] == [
        ("anyOf[0].anyOf[0]", "sevsnpvm", "tdxvm"),
        ("anyOf[0].anyOf[1].allOf[1]", 2, 1),
    ]


def test_a_satisfied_nested_any_of_contributes_no_unmet_claims() -> None:
    policy = ReleasePolicy.model_validate(
        {
            "version": "1.0.0",
            "anyOf": [
                {
                    "authority": AUTHORITY,
                    "allOf": [
                        {"anyOf": [{"claim": "a", "equals": 1}, {"claim": "a", "equals": 2}]},
                        {"claim": "b", "equals": "yes"},
                    ],
                }
            ],
        }
    )
    decision = evaluate_policy(policy, {"iss": AUTHORITY, "a": 2, "b": "no"})
    assert [u.claim for u in decision.unmet] == ["b"]


# --- issuer / authority ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authority", "issuer"),
    [
        (AUTHORITY + "/", AUTHORITY),
        (AUTHORITY, AUTHORITY + "/"),
        ("https://SharedWEU.weu.attest.azure.net", AUTHORITY),
    ],
)
def test_issuer_matches_authority_modulo_slash_and_host_case(authority: str, issuer: str) -> None:
    decision = evaluate_policy(build_policy(authority), {**guest_claims(), "iss": issuer})
    assert decision.allowed and decision.matched_authority == authority


def test_wrong_issuer_is_an_authority_mismatch() -> None:
    decision = evaluate_policy(build_policy("https://sharedeus2.eus2.attest.azure.net"), guest_claims())
    assert decision.reason is DecisionReason.AUTHORITY_MISMATCH and decision.unmet == ()
    assert "sharedeus2" in decision.summary()


def test_missing_issuer_is_reported() -> None:
    claims = guest_claims()
    del claims["iss"]
    decision = evaluate_policy(build_policy(AUTHORITY), claims)
    assert decision.reason is DecisionReason.NO_ISSUER
    assert "no 'iss'" in decision.summary()
    assert evaluate_policy(build_policy(AUTHORITY), claims, issuer=AUTHORITY).allowed


def test_only_authorities_matching_the_issuer_count() -> None:
    policy = ReleasePolicy.model_validate(
        {
            "version": "1.0.0",
            "anyOf": [
                {"authority": "https://other.example", "allOf": [{"claim": "iss", "exists": True}]},
                {"authority": AUTHORITY, "allOf": [{"claim": "gate", "equals": "open"}]},
                {"authority": AUTHORITY + "/", "allOf": [{"claim": "gate", "equals": "ajar"}]},
            ],
        }
    )
    decision = evaluate_policy(policy, {"iss": AUTHORITY, "gate": "shut"})
    assert [u.path for u in decision.unmet] == ["anyOf[1].allOf[0]", "anyOf[2].allOf[0]"]
    assert evaluate_policy(policy, {"iss": AUTHORITY, "gate": "ajar"}).matched_authority == AUTHORITY + "/"


# --- the sample policies in circulation (reference/skr_flow.md §6) against a guest token (§2) ------

DOCS_GUEST_POLICY = {
    "version": "1.0.0",
    "anyOf": [
        {
            "authority": "https://sharedweu.weu.attest.azure.net",
            "allOf": [
                {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
            ],
        }
    ],
}
CLI_DEFAULT_CVM_POLICY = {
    "version": "1.0.0",
    "anyOf": [
        {
            "authority": "https://sharedweu.weu.attest.azure.net/",
            "allOf": [{"claim": "x-ms-compliance-status", "equals": "azure-compliant-cvm"}],
        }
    ],
}
CLI_DATA_DISK_POLICY = {
    "version": "1.0.0",
    "anyOf": [
        {
            "authority": "https://sharedweu.weu.attest.azure.net/",
            "allOf": [
                {
                    "anyOf": [
                        {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                        {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "tdxvm"},
                    ]
                },
                {"claim": "x-ms-isolation-tee.x-ms-compliance-status", "equals": "azure-compliant-cvm"},
            ],
        }
    ],
}
CVM_REPO_SKR_POLICY = {
    "version": "1.0.0",
    "anyOf": [
        {
            "authority": f"https://shared{region}.{region}.attest.azure.net",
            "allOf": [
                {"claim": "x-ms-compliance-status", "equals": "azure-compliant-cvm"},
                {
                    "anyOf": [
                        {"claim": "x-ms-attestation-type", "equals": "tdxvm"},
                        {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
                    ]
                },
            ],
        }
        for region in ("weu", "eus", "neu", "wus")
    ],
}
AZURE_LOCAL_POLICY = {
    "version": "1.0.0",
    "anyOf": [
        {
            "authority": "https://sharedweu.weu.attest.azure.net",
            "allOf": [
                {"claim": "x-ms-isolation-tee.x-ms-sevsnpvm-is-debuggable", "equals": "false"},
                {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                {"claim": "x-ms-policy.edge-compliant-cvm", "equals": "true"},
            ],
        }
    ],
}


def test_docs_guest_policy_releases_to_a_compliant_cvm() -> None:
    decision = evaluate_policy(ReleasePolicy.model_validate(DOCS_GUEST_POLICY), guest_claims())
    assert decision.allowed and decision.reason is DecisionReason.ALLOWED
    assert "allowed" in decision.summary()


def test_docs_guest_policy_refuses_a_non_compliant_cvm_naming_the_claim() -> None:
    claims = guest_claims({"x-ms-compliance-status": "azure-non-compliant-cvm"})
    decision = evaluate_policy(ReleasePolicy.model_validate(DOCS_GUEST_POLICY), claims)
    (unmet,) = decision.unmet
    assert (unmet.claim, unmet.expected, unmet.actual) == (
        "x-ms-isolation-tee.x-ms-compliance-status",
        "azure-compliant-cvm",
        "azure-non-compliant-cvm",
    )
    assert 'actual "azure-non-compliant-cvm"' in decision.summary()


def test_docs_guest_policy_refuses_a_trusted_launch_vm_token() -> None:
    claims = guest_claims({"x-ms-attestation-type": None, "x-ms-compliance-status": None})
    decision = evaluate_policy(ReleasePolicy.model_validate(DOCS_GUEST_POLICY), claims)
    assert [(u.claim, u.found) for u in decision.unmet] == [
        ("x-ms-isolation-tee.x-ms-attestation-type", False),
        ("x-ms-isolation-tee.x-ms-compliance-status", False),
    ]


def test_cli_default_cvm_policy_never_releases_to_a_guest_token() -> None:
    decision = evaluate_policy(ReleasePolicy.model_validate(CLI_DEFAULT_CVM_POLICY), guest_claims())
    assert not decision.allowed
    assert [(u.claim, u.found) for u in decision.unmet] == [("x-ms-compliance-status", False)]


def test_cli_data_disk_policy_releases_to_a_sev_snp_guest() -> None:
    assert evaluate_policy(ReleasePolicy.model_validate(CLI_DATA_DISK_POLICY), guest_claims()).allowed
    tdx = guest_claims({"x-ms-attestation-type": "tdxvm"})
    assert evaluate_policy(ReleasePolicy.model_validate(CLI_DATA_DISK_POLICY), tdx).allowed


def test_cvm_repo_policy_matches_top_level_claims_a_guest_token_lacks() -> None:
    decision = evaluate_policy(ReleasePolicy.model_validate(CVM_REPO_SKR_POLICY), guest_claims())
    assert decision.matched_authority == AUTHORITY
    assert [(u.claim, u.actual) for u in decision.unmet] == [
        ("x-ms-compliance-status", None),
        ("x-ms-attestation-type", "azurevm"),
        ("x-ms-attestation-type", "azurevm"),
    ]


def test_azure_local_policy_bool_leniency_and_missing_claim() -> None:
    decision = evaluate_policy(ReleasePolicy.model_validate(AZURE_LOCAL_POLICY), guest_claims())
    # is-debuggable is the boolean false in the token; "false" in the policy still matches.
    assert [u.claim for u in decision.unmet] == ["x-ms-policy.edge-compliant-cvm"]
    claims = guest_claims()
    claims["x-ms-policy"] = {"edge-compliant-cvm": True}
    assert evaluate_policy(ReleasePolicy.model_validate(AZURE_LOCAL_POLICY), claims).allowed


def test_unmet_description_reads_well() -> None:
    decision = evaluate_policy(one({"claim": "svn", "greaterOrEquals": 8}), {"iss": AUTHORITY, "svn": 7})
    assert decision.unmet[0].describe() == "svn greaterOrEquals 8: actual 7 (anyOf[0].allOf[0])"
    missing = evaluate_policy(one({"claim": "svn", "greaterOrEquals": 8}), {"iss": AUTHORITY})
    assert missing.unmet[0].describe() == "svn greaterOrEquals 8: actual claim is missing (anyOf[0].allOf[0])"
