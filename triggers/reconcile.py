"""Timer trigger: one bounded reconcile pass per tick, driven from the Durable client.

Why a client-driven pass and not a ``reconcile`` orchestrator: the pass must start onboardings
whose instance ids are the deterministic per-VM ids that events and HTTP also use. Durable 1.x
for Python cannot start a top-level instance from an orchestrator, and a sub-orchestration with
an explicit id that collides with a running instance leaves the parent waiting forever. The
client, by contrast, reads each instance's status first and its start is refused over a running
instance - the same rules the event and HTTP paths apply. Azure reads go through skr.services.
"""

from __future__ import annotations

import logging
import os
from functools import partial

import azure.durable_functions as df
import azure.functions as func
from azure.core.exceptions import AzureError

from skr import clients
from skr.errors import SkrError, classify
from skr.models import OnboardingRequest, TriggerSource
from skr.settings import Settings
from skr.workflow.configure import RECONCILE_MAX_STARTS, scope_guard
from skr.workflow.instances import VmIdentity
from skr.workflow.reconcile import ReconcilePlan, plan_reconcile
from triggers._azure import list_fleet
from triggers._instances import (
    OFFBOARD_PREFIX,
    ONBOARD_PREFIX,
    Instances,
    OffboardSkip,
    start_offboarding_request,
    start_onboarding,
)

bp = df.Blueprint()
log = logging.getLogger("skr.triggers.reconcile")

DEFAULT_SCHEDULE = "0 */15 * * * *"
# The schedule is an app setting resolved by the Functions host at indexing time ("%NAME%"); when it
# is not set at all, the default keeps the function indexable instead of failing start-up.
SCHEDULE = "%SKR_RECONCILE_SCHEDULE%" if os.environ.get("SKR_RECONCILE_SCHEDULE") else DEFAULT_SCHEDULE


async def reconcile_pass(instances: Instances, settings: Settings) -> ReconcilePlan | None:
    """Compare Azure with the instances' results; start what is missing, offboard what is orphaned."""
    try:
        vms, assignments = await list_fleet(settings)
    except (AzureError, SkrError) as exc:
        log.warning("reconcile skipped: listing failed: %s", classify(exc).describe())
        return None
    onboardings = {s.instance_id: s for s in await instances.list(ONBOARD_PREFIX)}
    busy = frozenset(s.instance_id for s in await instances.list(OFFBOARD_PREFIX) if s.active)
    plan = plan_reconcile(
        vms,
        assignments,
        onboardings,
        guard=scope_guard(settings),
        max_starts=RECONCILE_MAX_STARTS,
        disable_key_on_offboard=settings.disable_key_on_offboard,
        busy_offboardings=busy,
    )
    started = 0
    for planned in plan.starts:
        request = OnboardingRequest(vm_id=planned.facts.vm_id, source=TriggerSource.RECONCILE)
        known = VmIdentity.of_facts(planned.facts)
        taken, _ = await start_onboarding(instances, request, settings, explicit=False, identity=partial(_known, known))
        started += taken.starts
    offboarded = 0
    for planned_off in plan.offboardings:
        try:
            await start_offboarding_request(instances, planned_off.request, settings)
            offboarded += 1
        except OffboardSkip as skip:
            log.info("reconcile: %s", skip)
    for assignment_id in plan.unattributed:
        log.warning(
            "reconcile: orphaned release grant %s has no onboarding record; left for an operator", assignment_id
        )
    log.info(
        "reconcile: %d CVMs in scope, %d up to date, %d onboardings started, %d deferred, %d offboardings started, "
        "%d foreign grants left alone",
        plan.in_scope,
        plan.up_to_date,
        started,
        plan.deferred,
        offboarded,
        plan.foreign_assignments,
    )
    return plan


async def _known(identity: VmIdentity) -> VmIdentity:
    return identity


@bp.timer_trigger(schedule=SCHEDULE, arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def reconcile(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    await reconcile_pass(Instances(client), clients.get_settings())
