"""The settings subset orchestrators need, passed in their input (orchestrators never read env)."""

from __future__ import annotations

from pydantic import Field, model_validator

from skr.workflow._base import Frozen
from skr.workflow.scope import ScopeGuard
from skr.workflow.timing import Backoff

IN_VM_POLL_INTERVAL_SECONDS = 10.0
"""The in-VM script's longest wait between release tries (vm_scripts: 2, 4, 8, then 10 s)."""


class OnboardingOptions(Frozen):
    """Timing of the propagation wait (DESIGN §4) and the scope guard, fixed when an instance starts.

    The gap between two release runs (noticing a finished command + the wait before the next one)
    is kept within one in-VM poll interval, so RBAC taking effect between two runs delays the
    release no more than it would inside one run. While the in-VM window is still running only a
    success (or a terminal error) can end the command early, so it is watched more loosely
    (``command_watch``) and polled closely (``command_poll``) once the window is over.
    """

    scope: ScopeGuard
    propagation_deadline_seconds: float = Field(default=900.0, gt=0, le=86_400)
    in_vm_retry_window_seconds: float = Field(default=90.0, ge=0, le=3600)
    in_vm_poll_interval_seconds: float = Field(default=IN_VM_POLL_INTERVAL_SECONDS, gt=0, le=600)
    run_command_timeout_seconds: float = Field(default=900.0, gt=0, le=5400)
    vm_ready_timeout_seconds: float = Field(default=600.0, ge=0, le=86_400)
    max_command_failures: int = Field(default=3, ge=1, le=50)
    max_transient_attempts: int = Field(default=6, ge=1, le=100)
    throttle_budget_seconds: float = Field(default=1800.0, gt=0, le=86_400)
    release_retry: Backoff = Backoff(initial_seconds=1.0, cap_seconds=4.0)
    command_watch: Backoff = Backoff(initial_seconds=2.0, cap_seconds=10.0)  # while the in-VM window runs
    command_poll: Backoff = Backoff(initial_seconds=2.0, cap_seconds=5.0)  # once it is over
    arm_visibility: Backoff = Backoff(initial_seconds=1.0, cap_seconds=10.0)
    principal_retry: Backoff = Backoff(initial_seconds=5.0, cap_seconds=30.0)
    conflict_retry: Backoff = Backoff(initial_seconds=5.0, cap_seconds=30.0)
    transient_retry: Backoff = Backoff(initial_seconds=2.0, cap_seconds=60.0)
    vm_ready_poll: Backoff = Backoff(initial_seconds=5.0, cap_seconds=30.0)

    @model_validator(mode="after")
    def _gap_within_poll_interval(self) -> OnboardingOptions:
        if self.command_watch.cap_seconds > self.in_vm_poll_interval_seconds:
            raise ValueError(
                f"command watch cap ({self.command_watch.cap_seconds}s) exceeds the in-VM poll interval "
                f"({self.in_vm_poll_interval_seconds}s): a release would be noticed late"
            )
        gap = self.release_retry.cap_seconds + self.command_poll.cap_seconds
        if gap > self.in_vm_poll_interval_seconds:
            raise ValueError(
                f"release retry cap ({self.release_retry.cap_seconds}s) + command poll cap "
                f"({self.command_poll.cap_seconds}s) = {gap}s exceeds the in-VM poll interval "
                f"({self.in_vm_poll_interval_seconds}s): the release would lag RBAC by more than one poll"
            )
        return self


class OffboardingOptions(Frozen):
    max_transient_attempts: int = Field(default=6, ge=1, le=100)
    throttle_budget_seconds: float = Field(default=1800.0, gt=0, le=86_400)
    transient_retry: Backoff = Backoff(initial_seconds=2.0, cap_seconds=60.0)
