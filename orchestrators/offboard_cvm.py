"""``offboard_cvm``: remove a VM's release grant(s), optionally disable its own key, report.

Works from the onboarding result passed in the input, because a deleted VM can no longer be read.
"""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df

from orchestrators._calls import Step, call
from skr.errors import ClassifiedError
from skr.models import OffboardingResult, Stage
from skr.workflow.inputs import OffboardInput
from skr.workflow.outcomes import OFFBOARDING_EVENT_TYPE
from skr.workflow.progress import Progress, clip

bp = df.Blueprint()
log = logging.getLogger("skr.orchestrators.offboard_cvm")


class OffboardingFailedError(RuntimeError):
    """The grant could not be removed; the instance fails so ops see it and can retry."""


def offboard(context: df.DurableOrchestrationContext) -> Step[dict[str, Any]]:
    data = OffboardInput.from_json(context.get_input())
    request, options = data.request, data.options
    progress = Progress(context.current_utc_datetime)

    def enter(stage: Stage, detail: str | None = None) -> None:
        progress.enter(stage, context.current_utc_datetime)
        context.set_custom_status(progress.status(context.current_utc_datetime, detail=detail))

    def waiting(attempt: int, error: ClassifiedError, seconds: float) -> None:
        detail = f"{error.code.value}: retry in {seconds:.0f}s"
        context.set_custom_status(progress.status(context.current_utc_datetime, attempt=attempt, detail=detail))

    enter(Stage.REMOVING_ASSIGNMENT, f"{len(request.assignment_ids)} assignment(s)")
    removed = yield from call(
        context,
        "remove_role_assignments",
        request.to_json(),
        OffboardingResult,
        options=options,
        on_wait=waiting,
        log=log,
    )
    if not removed.ok:
        detail = f"removing the release assignment(s) of {request.vm_id}: {removed.error.describe()}"
        context.set_custom_status(progress.status(context.current_utc_datetime, detail=clip(detail)))
        raise OffboardingFailedError(detail)
    result: OffboardingResult = removed.value

    key = request.key
    if request.disable_key and key is not None and not key.shared:
        enter(Stage.DISABLING_KEY, key.name)
        disabled = yield from call(
            context, "disable_key", {"key": key.to_json()}, dict[str, Any], options=options, on_wait=waiting, log=log
        )
        if disabled.ok:
            result = result.model_copy(update={"key_disabled": bool(disabled.value.get("disabled"))})
        else:
            note = f"key {key.name} not disabled: {disabled.error.describe()}"
            result = result.model_copy(update={"detail": clip(note, 1024)})

    enter(Stage.REPORTING)
    payload = {"type": OFFBOARDING_EVENT_TYPE, "subject": str(request.vm_id), "data": result.to_json()}
    published = yield from call(context, "publish_event", payload, dict[str, Any], options=options, log=log)
    if not published.ok and not context.is_replaying:
        log.info("offboarding event not published: %s", published.error.describe())
    enter(Stage.COMPLETED, f"removed {len(result.removed_assignments)}, already absent {len(result.already_absent)}")
    return result.to_json()


@bp.orchestration_trigger(context_name="context")
def offboard_cvm(context: df.DurableOrchestrationContext) -> Step[dict[str, Any]]:
    return (yield from offboard(context))
