"""Orchestration inputs: the request plus the options it runs with (small JSON, no secrets)."""

from __future__ import annotations

from skr.models import OffboardingRequest, OnboardingRequest
from skr.workflow._base import Frozen
from skr.workflow.options import OffboardingOptions, OnboardingOptions


class OnboardInput(Frozen):
    """Input of ``onboard_cvm``.

    ``supersedes`` names the assignment(s) of the VM's previous identity when the trigger restarts
    an onboarding because the identity changed: once the new identity is confirmed, they go.
    """

    request: OnboardingRequest
    options: OnboardingOptions
    supersedes: OffboardingRequest | None = None


class OffboardInput(Frozen):
    """Input of ``offboard_cvm``: built from the onboarding result, since a deleted VM can't be read."""

    request: OffboardingRequest
    options: OffboardingOptions = OffboardingOptions()
