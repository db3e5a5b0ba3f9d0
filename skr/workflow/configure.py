"""Settings -> the options orchestrators run with (triggers call this; orchestrators never read env)."""

from __future__ import annotations

from skr.settings import Settings
from skr.workflow.options import OffboardingOptions, OnboardingOptions
from skr.workflow.scope import ScopeGuard
from skr.workflow.timing import Backoff

RECONCILE_MAX_STARTS = 50
"""Onboardings one reconcile pass may start; the rest wait for the next pass (bounded work per tick)."""


def scope_guard(settings: Settings) -> ScopeGuard:
    tag = settings.tag_filter
    return ScopeGuard(scopes=settings.scopes, tag_name=tag.name if tag else None, tag_value=tag.value if tag else None)


def onboarding_options(settings: Settings) -> OnboardingOptions:
    """SKR_POLL_* shape the ARM, Entra and VM waits; the release re-runs stay within one in-VM poll."""
    poll = Backoff(initial_seconds=settings.poll_initial_seconds, cap_seconds=settings.poll_max_seconds)
    return OnboardingOptions(
        scope=scope_guard(settings),
        propagation_deadline_seconds=settings.propagation_deadline_seconds,
        in_vm_retry_window_seconds=settings.in_vm_retry_seconds,
        run_command_timeout_seconds=settings.run_command_timeout_seconds,
        arm_visibility=poll,
        principal_retry=poll,
        conflict_retry=poll,
        vm_ready_poll=poll,
        transient_retry=Backoff(
            initial_seconds=min(2.0, settings.poll_max_seconds), cap_seconds=settings.poll_max_seconds
        ),
    )


def offboarding_options(settings: Settings) -> OffboardingOptions:
    return OffboardingOptions(
        transient_retry=Backoff(
            initial_seconds=min(2.0, settings.poll_max_seconds), cap_seconds=settings.poll_max_seconds
        ),
    )
