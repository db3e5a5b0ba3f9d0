"""Secret scan: nothing the twin issued (tokens, MAA tokens, release JWS, key bytes) leaks anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localdev.stack import Stack, start_stack
from localdev.twin.core import TwinConfig
from localdev.twin.model import TeeProfile
from tests.e2e.helpers import onboard, propagation
from tests.e2e.support import Ledger, leaks, places


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = Path(tmp_path_factory.mktemp("secrets")) / "store.sqlite"
    with start_stack(twin_config=TwinConfig(propagation="fixed:25", seed=3), db_path=db) as running:
        yield running


def test_no_secret_reaches_history_status_logs_run_commands_or_events(
    stack: Stack, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    released_vm, released = onboard(stack, "cvm-secret")
    assert released["outcome"] == "released"
    with propagation(stack, "fixed:150"):
        _, slow = onboard(stack, "cvm-secret-slow")  # several runs, each with forbidden retries
    assert slow["outcome"] == "released" and slow["release_attempts"] >= 2
    _, denied = onboard(stack, "cvm-secret-denied", tee=TeeProfile.NONCOMPLIANT_CVM)
    assert denied["failure_code"] == "policy_denied"
    stack.twin.delete_vm(released_vm.resource_id)
    stack.wait_for_offboarding(released_vm)
    stack.settle()

    kinds = {item.kind for item in ledger.issued}
    assert {"access_token", "maa_token", "release_jws"} <= kinds, kinds
    assert len(ledger.releases()) == 2
    needles = ledger.needles()
    assert len(needles) > 20
    haystacks = places(stack)
    haystacks["pytest captured logs"] = caplog.text
    assert all(haystacks.values())  # every place actually has content to scan
    payload = ledger.releases()[0].value.split(".")[1]
    probe = payload[len(payload) // 3 : len(payload) // 3 + 120]
    assert leaks(needles, {"probe": f"log line {probe}..."}), "the scan must notice a piece of a JWS payload"
    assert leaks(needles, haystacks) == []
