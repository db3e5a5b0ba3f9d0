"""RBAC evaluation and the propagation-delay model, on a virtual clock."""

from __future__ import annotations

import random
import statistics
import uuid

import pytest
from azure.core.exceptions import HttpResponseError

from localdev.clock import VirtualClock
from localdev.twin import roles
from localdev.twin.core import Twin, TwinConfig
from localdev.twin.rbac import PropagationModel
from localdev.twin.testing import authorization_client, key_client


def test_new_assignment_is_enforced_only_after_its_drawn_delay(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock, propagation="fixed:40")
    reader = twin.add_principal("late-reader", replicated=True)
    key_client(twin).create_ec_key("k")
    vault = twin.vault().resource_id
    assignment = authorization_client(twin).role_assignments.create(vault, str(uuid.uuid4()), {
        "role_definition_id": f"/subscriptions/{twin.config.subscription_id}/providers/Microsoft.Authorization/"
                              f"roleDefinitions/{roles.KV_READER}",
        "principal_id": reader.object_id, "principal_type": "ServicePrincipal"})
    client = key_client(twin, reader.object_id)
    with clock.busy():
        with pytest.raises(HttpResponseError) as early:
            client.get_key("k")
        assert early.value.error.innererror["code"] == "ForbiddenByRbac"
        decision = twin.rbac.check(reader.object_id, "Microsoft.KeyVault/vaults/keys/read", f"{vault}/keys/k",
                                   data_action=True)
        assert not decision.allowed and decision.pending_until is not None
        assert "has not propagated yet" in decision.reason and assignment.name in decision.reason
        # ARM already shows the assignment: only enforcement lags.
        assert authorization_client(twin).role_assignments.get(vault, assignment.name).name == assignment.name
        clock.advance(39)
        with pytest.raises(HttpResponseError):
            client.get_key("k")
        clock.advance(2)
        assert client.get_key("k").name == "k"


def test_deleted_assignment_keeps_granting_until_revocation_propagates(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock, propagation="fixed:30")
    user = twin.add_principal("user", replicated=True)
    scope = twin.vault().resource_id
    granted = twin.grant(user.object_id, "Key Vault Reader", scope)
    action = "Microsoft.KeyVault/vaults/keys/read"
    with clock.busy():
        assert twin.rbac.check(user.object_id, action, scope, data_action=True)
        twin.rbac.remove_assignment(granted["name"])
        assert twin.rbac.check(user.object_id, action, scope, data_action=True)
        clock.advance(31)
        assert not twin.rbac.check(user.object_id, action, scope, data_action=True)


def test_seeded_draws_are_reproducible() -> None:
    model = PropagationModel.parse("empirical")
    first = [model.draw(random.Random(4)) for _ in range(3)]
    assert first == [model.draw(random.Random(4)) for _ in range(3)]


def test_empirical_default_has_the_documented_shape() -> None:
    model = PropagationModel.empirical()
    rng = random.Random(11)
    draws = sorted(model.draw(rng) for _ in range(20000))
    median = statistics.median(draws)
    p95 = draws[int(0.95 * len(draws))]
    assert 25 <= median <= 35
    assert 160 <= p95 <= 200
    assert max(draws) <= 600 and min(draws) >= 0


def test_fixed_and_uniform_models_and_bad_specs() -> None:
    assert PropagationModel.parse("fixed:12").draw(random.Random(1)) == 12
    rng = random.Random(2)
    uniform = [PropagationModel.parse("uniform:5:10").draw(rng) for _ in range(200)]
    assert min(uniform) >= 5 and max(uniform) <= 10
    custom = PropagationModel.parse("empirical:0:1,0.5:2,1:3")
    assert all(1 <= custom.draw(rng) <= 3 for _ in range(100))
    for spec in ("fixed", "uniform:9:1", "empirical:0.5:1,1:2", "normal:3", "empirical:0:5,1:1"):
        with pytest.raises(ValueError):
            PropagationModel.parse(spec)


def test_propagation_model_is_settable_at_runtime(twin_factory) -> None:
    clock = VirtualClock()
    twin = twin_factory(clock=clock, propagation="fixed:0")
    twin.rbac.model = PropagationModel.fixed(90)
    user = twin.add_principal("u", replicated=True)
    assignment = twin.grant(user.object_id, "Reader", f"/subscriptions/{twin.config.subscription_id}", propagate=True)
    assert assignment["twin"]["effectiveAt"] == pytest.approx(clock.time() + 90)


def test_wildcards_not_actions_and_data_actions(twin: Twin) -> None:
    sub = f"/subscriptions/{twin.config.subscription_id}"
    p = twin.add_principal("p", replicated=True).object_id
    twin.grant(p, "Contributor", sub)
    check = twin.rbac.check
    assert check(p, "Microsoft.Compute/virtualMachines/write", f"{sub}/resourceGroups/x", data_action=False)
    assert not check(p, "Microsoft.Authorization/roleAssignments/write", sub, data_action=False)
    assert not check(p, "microsoft.authorization/ROLEASSIGNMENTS/write", sub, data_action=False)
    assert not check(p, "Microsoft.KeyVault/vaults/keys/read", sub, data_action=True)  # "*" is no data action
    q = twin.add_principal("q", replicated=True).object_id
    twin.grant(q, "Key Vault Crypto Officer", twin.vault().resource_id)
    key = f"{twin.vault().resource_id}/keys/any"
    assert check(q, "Microsoft.KeyVault/vaults/keys/release/action", key, data_action=True)
    assert not check(q, "Microsoft.KeyVault/vaults/secrets/getSecret/action", key, data_action=True)
    assert not check(q, "Microsoft.KeyVault/vaults/keys/read", f"{twin.vault().resource_id}2/keys/any",
                     data_action=True)  # segment-aware scope prefix
    with pytest.raises(ValueError):
        twin.grant(q, "No Such Role", key)


def test_same_seed_names_the_same_principals_and_draws_the_same_delay_per_assignment() -> None:
    """Concurrent onboardings create assignments in any order; each one's delay must not depend on it."""
    first, second = Twin(), Twin()
    assert [first.add_principal(f"p{i}").object_id for i in range(3)] == [
        second.add_principal(f"p{i}").object_id for i in range(3)
    ]
    names = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"assignment-{i}")) for i in range(5)]
    in_order = [first.rbac.draw_delay(name) for name in names]
    reversed_order = [second.rbac.draw_delay(name) for name in reversed(names)][::-1]
    assert in_order == reversed_order
    assert len(set(in_order)) == len(in_order)
    other_seed = Twin(TwinConfig(seed=99))
    assert [other_seed.rbac.draw_delay(name) for name in names] != in_order
