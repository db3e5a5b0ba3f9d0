"""``onboard_cvm``: inspect -> key -> role -> assign -> wait for RBAC -> release in the VM -> report.

The propagation wait (DESIGN §4) polls real signals only: ARM until the assignment is readable,
then the in-VM release itself, re-run on ``forbidden_by_rbac`` until it works or the deadline
passes. Every wait is a durable timer; nothing here reads a clock, env, or does I/O.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import azure.durable_functions as df

from orchestrators._calls import Called, Step, call
from skr.errors import ClassifiedError
from skr.models import (
    AssignmentRef,
    FailureCode,
    KeyRef,
    OffboardingRequest,
    OffboardingResult,
    OnboardingResult,
    RoleRef,
    SkipReason,
    Stage,
    TriggerSource,
    VmFacts,
)
from skr.workflow.commands import CommandPoll, Verdict, judge
from skr.workflow.inputs import OnboardInput
from skr.workflow.outcomes import describe_report, event_type
from skr.workflow.progress import Progress
from skr.workflow.result import Finish, ResultDraft
from skr.workflow.timing import clip_to_deadline, later, remaining

bp = df.Blueprint()
log = logging.getLogger("skr.orchestrators.onboard_cvm")

NOT_READY_POWER = frozenset({"stopped", "deallocated", "deallocating", "stopping", "starting"})


def _power(facts: VmFacts) -> str | None:
    return None if facts.power_state is None else facts.power_state.lower().removeprefix("powerstate/")


class OnboardRun:
    """One execution of the onboarding; replayed from the top on every episode."""

    def __init__(self, context: df.DurableOrchestrationContext) -> None:
        self.context = context
        self.input = OnboardInput.from_json(context.get_input())
        self.request = self.input.request
        self.options = self.input.options
        self.vm_id = self.request.vm_id
        self.progress = Progress(self.now)
        self.draft = ResultDraft(vm_id=self.vm_id, started_at=self.now)
        self.attempt = 0

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.context.current_utc_datetime

    def info(self, message: str, *args: Any) -> None:
        if not self.context.is_replaying:
            log.info("%s: " + message, self.context.instance_id, *args)

    def enter(self, stage: Stage, detail: str | None = None) -> None:
        self.progress.enter(stage, self.now)
        self.show(detail)

    def show(self, detail: str | None = None) -> None:
        self.context.set_custom_status(
            self.progress.status(
                self.now, attempt=self.attempt, detail=detail, assigned_at=self.draft.assignment_created_at
            )
        )

    def waiting(self, attempt: int, error: ClassifiedError, seconds: float) -> None:
        self.show(f"{error.code.value}: retry {attempt + 1} in {seconds:.0f}s")

    def call(self, name: str, payload: Any, model: Any, deadline: datetime | None = None) -> Step[Called[Any]]:
        return call(
            self.context, name, payload, model, options=self.options, deadline=deadline, on_wait=self.waiting, log=log
        )

    def sleep(self, seconds: float) -> Step[None]:
        yield self.context.create_timer(later(self.now, seconds))

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> Step[dict[str, Any]]:
        finish: Finish | None = None
        try:
            yield from self.onboard()
        except Finish as done:
            finish = done
        self.enter(Stage.REPORTING)
        self.draft.stage_times = dict(self.progress.stage_times)
        result = self.draft.build(finish, self.now)
        yield from self.publish(result)
        self.progress.enter(Stage.COMPLETED, self.now)
        self.show(result.detail)
        code = f" ({result.failure_code.value})" if result.failure_code else ""
        self.info("finished %s%s", result.outcome.value, code)
        return result.to_json()

    def onboard(self) -> Step[None]:
        facts = yield from self.inspect()
        yield from self.remove_superseded(facts)
        key = yield from self.ensure_key(facts)
        role = yield from self.ensure_role()
        assignment = yield from self.assign(facts, key, role)
        # The deadline counts from the assignment's creation (from now for one made earlier).
        start = self.draft.assignment_created_at if assignment.created else None
        deadline = later(start or self.now, self.options.propagation_deadline_seconds)
        yield from self.wait_for_arm(assignment, deadline)
        yield from self.release(facts, key, assignment, deadline)

    # -- stages --------------------------------------------------------------------------------

    def inspect(self) -> Step[VmFacts]:
        self.enter(Stage.INSPECTING_VM)
        guard = self.options.scope
        if guard.check_id(self.vm_id) is not None:
            raise Finish.skipped(SkipReason.OUT_OF_SCOPE, f"VM is outside the configured {guard.describe()}")
        ready_by = later(self.now, self.options.vm_ready_timeout_seconds)
        polls = 0
        while True:
            called = yield from self.call("inspect_vm", {"vm_id": str(self.vm_id)}, VmFacts)
            if not called.ok:
                raise Finish.failed(called.error.code, f"inspecting the VM: {called.error.describe()}")
            facts: VmFacts = called.value
            self.draft.facts = facts
            skip = guard.check_facts(facts)
            if skip is SkipReason.NOT_CONFIDENTIAL_VM:
                kind = facts.security_type or "a VM without a security profile"
                raise Finish.skipped(skip, f"not a Confidential VM (securityType: {kind})")
            if skip is not None:
                raise Finish.skipped(skip, f"VM does not match the {guard.describe()}")
            if not facts.principal_id:
                raise Finish.failed(
                    FailureCode.NO_MANAGED_IDENTITY, "the VM has no system-assigned managed identity to grant"
                )
            problem = self.not_ready(facts)
            if problem is None:
                return facts
            polls += 1
            wait = clip_to_deadline(self.now, ready_by, self.options.vm_ready_poll.delay(polls))
            if not wait:
                raise Finish.failed(FailureCode.VM_NOT_READY, f"VM not ready after waiting: {problem}")
            self.show(f"waiting for the VM: {problem}")
            yield from self.sleep(wait)

    @staticmethod
    def not_ready(facts: VmFacts) -> str | None:
        state = (facts.provisioning_state or "Succeeded").lower()
        if state != "succeeded":
            return f"provisioning state {facts.provisioning_state}"
        power = _power(facts)
        if power in NOT_READY_POWER:
            return f"power state {power}"
        return None

    def remove_superseded(self, facts: VmFacts) -> Step[None]:
        """The VM's previous identity loses its grant once the new identity is confirmed."""
        old = self.input.supersedes
        if old is None or not old.assignment_ids:
            return
        if (old.principal_id or "").lower() == (facts.principal_id or "").lower():
            return
        self.show("removing the previous identity's assignment")
        called = yield from self.call("remove_role_assignments", old.to_json(), OffboardingResult)
        if not called.ok:
            self.info("could not remove the superseded assignment: %s", called.error.describe())

    def ensure_key(self, facts: VmFacts) -> Step[KeyRef]:
        self.enter(Stage.ENSURING_KEY)
        called = yield from self.call("ensure_key", {"vm": facts.to_json(), "key_name": self.request.key_name}, KeyRef)
        if not called.ok:
            raise Finish.failed(called.error.code, f"ensuring the key: {called.error.describe()}")
        key: KeyRef = called.value
        self.draft.key = key
        return key

    def ensure_role(self) -> Step[RoleRef]:
        self.enter(Stage.ENSURING_ROLE)
        called = yield from self.call("ensure_release_role", {}, RoleRef)
        if not called.ok:
            raise Finish.failed(called.error.code, f"ensuring the release role: {called.error.describe()}")
        role: RoleRef = called.value
        self.draft.role = role
        return role

    def assign(self, facts: VmFacts, key: KeyRef, role: RoleRef) -> Step[AssignmentRef]:
        """PUT the assignment; PrincipalNotFound (Entra replication) is retried until the deadline."""
        self.enter(Stage.ASSIGNING_ROLE)
        deadline = later(self.now, self.options.propagation_deadline_seconds)
        payload = {"key": key.to_json(), "principal_id": facts.principal_id, "role": role.to_json()}
        called = yield from self.call("assign_release_role", payload, AssignmentRef, deadline)
        if not called.ok:
            raise Finish.failed(called.error.code, f"assigning the release role: {called.error.describe()}")
        assignment: AssignmentRef = called.value
        self.draft.assignment = assignment
        # The attempt that succeeded was scheduled no later than ARM created the assignment, so
        # measuring from here never understates the propagation delay.
        created_at = called.last_started
        if not assignment.created and assignment.created_on is not None:
            created_at = assignment.created_on
        self.draft.assignment_created_at = created_at
        self.info("assignment %s (%s)", assignment.assignment_id, "new" if assignment.created else "existing")
        return assignment

    def wait_for_arm(self, assignment: AssignmentRef, deadline: datetime) -> Step[None]:
        """ARM visibility: cheap and usually immediate; proves only that ARM has the assignment."""
        self.enter(Stage.WAITING_FOR_RBAC, "waiting for the assignment to be readable in ARM")
        polls = 0
        while True:
            called = yield from self.call(
                "get_role_assignment", {"assignment_id": str(assignment.assignment_id)}, AssignmentRef | None, deadline
            )
            if not called.ok:
                raise Finish.failed(called.error.code, f"reading the assignment: {called.error.describe()}")
            if called.value is not None:
                return
            polls += 1
            wait = clip_to_deadline(self.now, deadline, self.options.arm_visibility.delay(polls))
            if not wait:
                raise Finish.failed(
                    FailureCode.RBAC_PROPAGATION_TIMEOUT,
                    "the assignment never became readable in ARM before the deadline",
                )
            self.show(f"assignment not readable in ARM yet (check {polls})")
            yield from self.sleep(wait)

    def release(self, facts: VmFacts, key: KeyRef, assignment: AssignmentRef, deadline: datetime) -> Step[None]:
        """Run the in-VM release until it works; ``forbidden_by_rbac`` means "not effective yet"."""
        self.enter(Stage.RELEASING)
        waits = 0
        failures = 0
        last = "no release attempt finished"
        while True:
            if remaining(self.now, deadline) <= 0:
                raise self.timed_out(last)
            self.attempt += 1
            self.draft.release_attempts = self.attempt
            window = min(self.options.in_vm_retry_window_seconds, remaining(self.now, deadline))
            self.show(f"starting in-VM release attempt {self.attempt}")
            poll = yield from self.run_command(facts, key, window, deadline)
            if poll is None:
                raise self.timed_out(last)
            if poll.report is not None:
                self.draft.report = poll.report
            verdict, code = judge(poll)
            if verdict is Verdict.RELEASED:
                self.draft.released_at = self.now
                self.info("released on attempt %d", self.attempt)
                return
            if verdict is Verdict.FAIL:
                assert code is not None and poll.report is not None
                raise Finish.failed(code, describe_report(poll.report))
            if verdict is Verdict.WAIT_FOR_RBAC:
                waits += 1
                last = describe_report(poll.report) if poll.report else "forbidden_by_rbac"
                delay = self.options.release_retry.delay(waits)
            else:
                failures += 1
                last = describe_report(poll.report) if poll.report else f"run command {poll.state}: {poll.detail or ''}"
                if failures >= self.options.max_command_failures:
                    assert code is not None
                    raise Finish.failed(code, f"in-VM release failed {failures} times; last: {last}")
                delay = self.options.transient_retry.delay(failures)
            wait = clip_to_deadline(self.now, deadline, delay)
            if not wait:
                raise self.timed_out(last)
            self.show(f"attempt {self.attempt}: {last}; next attempt in {wait:.0f}s")
            yield from self.sleep(wait)

    def timed_out(self, last: str) -> Finish:
        return Finish.failed(
            FailureCode.RBAC_PROPAGATION_TIMEOUT,
            f"release not permitted within {self.options.propagation_deadline_seconds:.0f}s of the assignment "
            f"({self.attempt} attempts); last: {last}",
        )

    def run_command(self, facts: VmFacts, key: KeyRef, window: float, deadline: datetime) -> Step[CommandPoll | None]:
        """Start one release command, poll it to the end, delete it. None: the deadline came first."""
        payload = {
            "vm": facts.to_json(),
            "key": key.to_json(),
            "attempt": self.attempt,
            "retry_window_seconds": round(window, 3),
        }
        started = yield from self.call("start_release_command", payload, dict[str, Any], deadline)
        if not started.ok:
            yield from self.command_error(started.error, "starting the release command")
        handle: dict[str, Any] = started.value
        try:
            poll = yield from self.poll_command(handle, window, deadline)
        except Finish:
            yield from self.delete_command(handle)
            raise
        yield from self.delete_command(handle)
        return poll

    def poll_command(self, handle: dict[str, Any], window: float, deadline: datetime) -> Step[CommandPoll | None]:
        started_at = self.now
        window_end = later(started_at, window)
        give_up = min(deadline, later(started_at, self.options.run_command_timeout_seconds))
        watched = polled = 0
        while True:
            if self.now < window_end:
                watched += 1
                delay = min(
                    self.options.command_watch.delay(watched),
                    remaining(self.now, window_end) + self.options.command_poll.initial_seconds,
                )
            else:
                polled += 1
                delay = self.options.command_poll.delay(polled)
            wait = clip_to_deadline(self.now, give_up, delay)
            if not wait:
                if give_up < deadline:
                    return CommandPoll(state="timed_out", detail="run command exceeded its timeout")
                return None
            yield from self.sleep(wait)
            called = yield from self.call("get_release_command", handle, CommandPoll, deadline)
            if not called.ok:
                yield from self.command_error(called.error, "reading the release command")
            poll: CommandPoll = called.value
            if poll.finished:
                return poll
            self.show(f"in-VM release attempt {self.attempt}: {poll.state}")

    def delete_command(self, handle: dict[str, Any]) -> Step[None]:
        name = handle.get("command_name")
        if not isinstance(name, str):
            return
        called = yield from self.call("delete_release_command", {"vm_id": str(self.vm_id), "command_name": name}, dict)
        if not called.ok:
            self.info("could not delete run command %s: %s", name, called.error.describe())

    def command_error(self, error: ClassifiedError, doing: str) -> Step[None]:
        """A run-command call failed for good; a VM that is gone gets its grant removed."""
        if error.code in (FailureCode.VM_DELETED, FailureCode.VM_NOT_FOUND):
            yield from self.vm_gone(doing)
        raise Finish.failed(error.code, f"{doing}: {error.describe()}")

    def vm_gone(self, doing: str) -> Step[None]:
        called = yield from self.call("inspect_vm", {"vm_id": str(self.vm_id)}, VmFacts)
        if called.ok or called.error.code is not FailureCode.VM_NOT_FOUND:
            return
        assignment = self.draft.assignment
        if assignment is not None:
            request = OffboardingRequest(
                vm_id=self.vm_id,
                principal_id=assignment.principal_id,
                assignment_ids=[assignment.assignment_id],
                source=TriggerSource.EVENT,
            )
            removed = yield from self.call("remove_role_assignments", request.to_json(), OffboardingResult)
            if not removed.ok:
                self.info("VM deleted; removing its assignment failed: %s", removed.error.describe())
        raise Finish.failed(FailureCode.VM_DELETED, f"the VM was deleted while {doing}")

    def publish(self, result: OnboardingResult) -> Step[None]:
        payload = {"type": event_type(result.outcome), "subject": str(self.vm_id), "data": result.to_json()}
        called = yield from self.call("publish_event", payload, dict)
        if not called.ok:
            self.info("result event not published: %s", called.error.describe())


@bp.orchestration_trigger(context_name="context")
def onboard_cvm(context: df.DurableOrchestrationContext) -> Step[dict[str, Any]]:
    return (yield from OnboardRun(context).run())
