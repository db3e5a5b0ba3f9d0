from __future__ import annotations

import pytest

from skr.models import ScopeId, SkipReason
from skr.settings import load_settings
from skr.workflow.configure import offboarding_options, onboarding_options, scope_guard
from skr.workflow.options import IN_VM_POLL_INTERVAL_SECONDS
from tests.unit.workflow_factories import SUB, facts

BASE = {
    "SKR_VAULT_URL": "https://kv-skr.vault.azure.net",
    "SKR_MAA_ENDPOINT": "https://shared.weu.attest.azure.net",
    "SKR_SCOPES": f"/subscriptions/{SUB}/resourceGroups/rg1",
}


def test_options_follow_the_settings() -> None:
    settings = load_settings(
        {
            **BASE,
            "SKR_PROPAGATION_DEADLINE_SECONDS": "600",
            "SKR_IN_VM_RETRY_SECONDS": "60",
            "SKR_RUN_COMMAND_TIMEOUT_SECONDS": "300",
            "SKR_POLL_INITIAL_SECONDS": "3",
            "SKR_POLL_MAX_SECONDS": "40",
            "SKR_TAG_FILTER": "skr=on",
        }
    )
    options = onboarding_options(settings)
    assert options.propagation_deadline_seconds == 600
    assert options.in_vm_retry_window_seconds == 60 and options.run_command_timeout_seconds == 300
    assert (options.arm_visibility.initial_seconds, options.arm_visibility.cap_seconds) == (3, 40)
    assert options.principal_retry == options.arm_visibility == options.vm_ready_poll
    assert options.transient_retry.cap_seconds == 40
    # The release re-runs keep their own tight timing whatever SKR_POLL_MAX_SECONDS says.
    assert options.release_retry.cap_seconds + options.command_poll.cap_seconds <= IN_VM_POLL_INTERVAL_SECONDS
    assert options.scope.scopes == (ScopeId.parse(BASE["SKR_SCOPES"]),)
    assert options.scope.check_facts(facts(tags={"skr": "on"})) is None
    assert options.scope.check_facts(facts()) is SkipReason.TAG_FILTER_MISMATCH
    assert offboarding_options(settings).transient_retry.cap_seconds == 40


def test_scope_guard_without_tag_filter() -> None:
    guard = scope_guard(load_settings(BASE))
    assert guard.tag_name is None and guard.check_facts(facts()) is None


@pytest.mark.parametrize("poll_max", ["1", "2"])
def test_tiny_poll_settings_still_give_valid_backoffs(poll_max: str) -> None:
    settings = load_settings({**BASE, "SKR_POLL_INITIAL_SECONDS": "1", "SKR_POLL_MAX_SECONDS": poll_max})
    options = onboarding_options(settings)
    assert options.transient_retry.initial_seconds <= options.transient_retry.cap_seconds == float(poll_max)
