"""Property tests: codec round trips, canonical form, monotonicity, and agreement with the twin's evaluator."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from localdev.twin import policy_eval as twin
from skr.policy import (
    AuthorityRule,
    ClaimCondition,
    ConditionGroup,
    DecisionReason,
    GroupKind,
    Operator,
    ReleasePolicy,
    canonical_policy,
    decode_policy,
    encode_policy,
    evaluate_policy,
    lint_policy,
    policy_json_bytes,
    same_policy,
)

AUTHORITIES = ("https://maa-a.example", "https://maa-b.example/", "https://MAA-c.example")
SEGMENTS = ("a", "b", "c")

# Values kept away from "nan"/"inf"-like strings, whose numeric reading is implementation-defined.
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from([0.5, 1.0, 2.5]),
    st.sampled_from(["true", "false", "1", "2", "10", "a", "b", "ab"]),
)
paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(".".join)


@st.composite
def claim_conditions(draw: st.DrawFn) -> ClaimCondition:
    operator = draw(st.sampled_from(list(Operator)))
    value = draw(st.booleans()) if operator is Operator.EXISTS else draw(scalars)
    return ClaimCondition.of(draw(paths), operator, value)


conditions = st.recursive(
    claim_conditions(),
    lambda children: st.builds(
        lambda kind, items: ConditionGroup(kind=kind, conditions=tuple(items)),
        st.sampled_from(list(GroupKind)),
        st.lists(children, min_size=1, max_size=3),
    ),
    max_leaves=8,
)


@st.composite
def policies(draw: st.DrawFn) -> ReleasePolicy:
    rules = draw(
        st.lists(
            st.builds(
                lambda authority, kind, items: AuthorityRule(authority=authority, kind=kind, conditions=tuple(items)),
                st.sampled_from(AUTHORITIES),
                st.sampled_from(list(GroupKind)),
                st.lists(conditions, min_size=1, max_size=3),
            ),
            min_size=1,
            max_size=3,
        )
    )
    return ReleasePolicy(authorities=tuple(rules))


def _claim_trees(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return scalars
    return st.one_of(scalars, st.dictionaries(st.sampled_from(SEGMENTS), _claim_trees(depth - 1), max_size=3))


tokens = st.builds(
    lambda issuer, body: {"iss": issuer, **body},
    st.sampled_from([*AUTHORITIES, "https://maa-a.example/", "https://elsewhere.example"]),
    st.dictionaries(st.sampled_from(SEGMENTS), _claim_trees(2), max_size=3),
)


@given(policies())
def test_encode_decode_round_trip(policy: ReleasePolicy) -> None:
    decoded = decode_policy(encode_policy(policy))
    assert policy_json_bytes(decoded) == policy_json_bytes(policy)
    assert decode_policy(policy_json_bytes(policy)) == decoded
    assert ReleasePolicy.model_validate(policy.to_json()).to_json() == policy.to_json()
    assert lint_policy(policy_json_bytes(policy)).ok


@given(policies(), st.randoms(use_true_random=False))
def test_canonical_form_is_idempotent_and_order_blind(policy: ReleasePolicy, rnd: random.Random) -> None:
    canonical = canonical_policy(policy)
    assert canonical_policy(canonical) == canonical

    def shuffle(node: ClaimCondition | ConditionGroup) -> ClaimCondition | ConditionGroup:
        if isinstance(node, ClaimCondition):
            return node
        items = [shuffle(c) for c in node.conditions]
        rnd.shuffle(items)
        return ConditionGroup(kind=node.kind, conditions=tuple(items))

    rules = [
        AuthorityRule(
            authority=rule.authority.rstrip("/") + "/",
            kind=rule.kind,
            conditions=tuple(rnd.sample([shuffle(c) for c in rule.conditions], len(rule.conditions))),
        )
        for rule in policy.authorities
    ]
    rnd.shuffle(rules)
    assert same_policy(policy, ReleasePolicy(authorities=tuple(rules)))


@given(policies(), tokens)
def test_canonical_form_decides_like_the_original(policy: ReleasePolicy, claims: dict[str, Any]) -> None:
    assert evaluate_policy(canonical_policy(policy), claims).allowed == evaluate_policy(policy, claims).allowed


@given(policies(), tokens)
def test_a_denial_always_says_why(policy: ReleasePolicy, claims: dict[str, Any]) -> None:
    decision = evaluate_policy(policy, claims)
    if decision.allowed:
        assert decision.unmet == () and decision.matched_authority is not None
    elif decision.reason is DecisionReason.CLAIMS_UNMET:
        assert decision.unmet, "a denial by claims names at least one unmet claim"
    else:
        assert decision.reason is DecisionReason.AUTHORITY_MISMATCH and decision.unmet == ()


def _with_extra_all_of(policy: ReleasePolicy, extra: ClaimCondition | ConditionGroup) -> ReleasePolicy:
    """Add ``extra`` to every authority's conditions under allOf (appending when already allOf)."""
    rules = []
    for rule in policy.authorities:
        if rule.kind is GroupKind.ALL_OF:
            rules.append(rule.model_copy(update={"conditions": (*rule.conditions, extra)}))
        else:
            nested = ConditionGroup(kind=rule.kind, conditions=rule.conditions)
            rules.append(AuthorityRule(authority=rule.authority, kind=GroupKind.ALL_OF, conditions=(nested, extra)))
    return ReleasePolicy(authorities=tuple(rules))


@given(policies(), tokens, conditions)
def test_adding_an_all_of_condition_never_turns_deny_into_allow(
    policy: ReleasePolicy, claims: dict[str, Any], extra: ClaimCondition | ConditionGroup
) -> None:
    before = evaluate_policy(policy, claims)
    after = evaluate_policy(_with_extra_all_of(policy, extra), claims)
    if not before.allowed:
        assert not after.allowed
    assert after.allowed <= before.allowed


@given(policies(), tokens, paths)
def test_adding_an_unmet_all_of_claim_denies_and_names_it(
    policy: ReleasePolicy, claims: dict[str, Any], path: str
) -> None:
    unmet = ClaimCondition.of("zz." + path, Operator.EQUALS, "never")  # "zz" is never a claim
    decision = evaluate_policy(_with_extra_all_of(policy, unmet), claims)
    assert not decision.allowed
    if decision.reason is DecisionReason.CLAIMS_UNMET:
        assert "zz." + path in {u.claim for u in decision.unmet}


@given(policies(), tokens, conditions)
def test_adding_an_any_of_alternative_never_turns_allow_into_deny(
    policy: ReleasePolicy, claims: dict[str, Any], extra: ClaimCondition | ConditionGroup
) -> None:
    rules = [
        AuthorityRule(
            authority=rule.authority,
            kind=GroupKind.ANY_OF,
            conditions=(ConditionGroup(kind=rule.kind, conditions=rule.conditions), extra),
        )
        for rule in policy.authorities
    ]
    widened = ReleasePolicy(authorities=tuple(rules))
    assert evaluate_policy(widened, claims).allowed >= evaluate_policy(policy, claims).allowed


@settings(max_examples=300)
@given(policies(), tokens)
def test_agrees_with_the_twins_independent_evaluator(policy: ReleasePolicy, claims: dict[str, Any]) -> None:
    ours = evaluate_policy(policy, claims)
    theirs = twin.evaluate(twin.parse_policy(policy_json_bytes(policy)), claims)
    assert ours.allowed == theirs.allowed
    assert (ours.reason is not DecisionReason.AUTHORITY_MISMATCH) == theirs.authority_matched
    if not ours.allowed:
        assert {u.claim for u in ours.unmet} == set(theirs.unmet)
