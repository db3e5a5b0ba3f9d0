"""The demo fleet: seeded, realistic, and every VM carries the outcome it must reach."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localdev.demo_fleet import SHARED_KEY_TAG, VmKind, build_fleet
from localdev.twin.model import TeeProfile


def test_same_seed_same_fleet_and_another_seed_another_fleet() -> None:
    assert build_fleet(24, seed=7) == build_fleet(24, seed=7)
    assert build_fleet(24, seed=7) != build_fleet(24, seed=8)


def test_default_fleet_mixes_every_kind_the_issue_asks_for() -> None:
    fleet = build_fleet(24, seed=1)
    counts = fleet.counts()
    assert counts[VmKind.NONCOMPLIANT] == 1
    assert counts[VmKind.TRUSTED_LAUNCH] == 1
    assert counts[VmKind.NO_IDENTITY] == 1
    assert counts[VmKind.SHARED_KEY] == 4
    assert counts[VmKind.COMPLIANT] == 17
    group = [vm for vm in fleet.vms if vm.kind is VmKind.SHARED_KEY]
    assert {vm.tags[SHARED_KEY_TAG] for vm in group} == {fleet.shared_key}
    assert all(SHARED_KEY_TAG not in vm.tags for vm in fleet.vms if vm.kind is not VmKind.SHARED_KEY)


@given(size=st.integers(min_value=1, max_value=300), seed=st.integers(min_value=0, max_value=2**32))
def test_any_size_gives_unique_names_sorted_creations_and_a_compliant_cvm(size: int, seed: int) -> None:
    fleet = build_fleet(size, seed=seed, burst_seconds=60.0, max_duplicates=3)
    assert len(fleet.vms) == size
    assert len({vm.name for vm in fleet.vms}) == size
    offsets = [vm.create_offset_s for vm in fleet.vms]
    assert offsets == sorted(offsets)
    assert all(0.0 <= o <= 60.0 for o in offsets)
    assert all(0 <= vm.duplicates <= 3 for vm in fleet.vms)
    assert any(vm.expected == "released" for vm in fleet.vms)


def test_kinds_map_to_twin_profiles_and_expected_outcomes() -> None:
    assert VmKind.NONCOMPLIANT.tee is TeeProfile.NONCOMPLIANT_CVM
    assert VmKind.TRUSTED_LAUNCH.tee is TeeProfile.TRUSTED_LAUNCH
    assert VmKind.NO_IDENTITY.tee is TeeProfile.COMPLIANT_CVM and not VmKind.NO_IDENTITY.has_identity
    assert VmKind.TRUSTED_LAUNCH.expected == "skipped/not_confidential_vm"
    assert VmKind.NONCOMPLIANT.expected == "failed/policy_denied"
    assert VmKind.NO_IDENTITY.expected == "failed/no_managed_identity"


def test_small_fleets_keep_a_compliant_cvm_first() -> None:
    assert [vm.kind for vm in build_fleet(1, seed=0).vms] == [VmKind.COMPLIANT]
    assert sorted(build_fleet(2, seed=0).counts()) == [VmKind.COMPLIANT, VmKind.NONCOMPLIANT]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"size": 0}, "at least 1"),
    ({"size": 3, "burst_seconds": -1.0}, "non-negative"),
    ({"size": 3, "max_duplicates": -1}, "non-negative"),
])
def test_bad_sizes_are_refused(kwargs: dict, message: str) -> None:
    size = kwargs.pop("size")
    with pytest.raises(ValueError, match=message):
        build_fleet(size, seed=0, **kwargs)
