"""Orchestrators of the SKR Orchestrator: generator functions, deterministic, no I/O."""

import azure.durable_functions as df

from orchestrators import offboard_cvm, onboard_cvm

BLUEPRINTS: list[df.Blueprint] = [onboard_cvm.bp, offboard_cvm.bp]
