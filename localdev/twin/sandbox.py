"""Running a script "inside" a simulated VM: its environment, tools and clock.

``prepare_sandbox(twin, vm, workdir)`` returns the complete environment (it does not inherit the
twin's: the app's credentials must not leak into a VM) for a process that should behave as if it
ran in ``vm``:

* ``PATH`` starts with ``{workdir}/bin`` holding ``AttestationClient`` and ``AzureAttestSKR``
  (the twin's stand-ins, run by the same interpreter as the script) and ``python3``/``python``
  pointing at that interpreter (so ``#!/usr/bin/env python3`` scripts use it);
* ``SKR_IMDS_URL``: the VM's own IMDS origin (``http://127.0.0.1:<port>``);
* ``SKR_CA_BUNDLE``: the twin CA (TLS of every twin listener and root of the release JWS chain);
* ``SKR_OUTPUT_PATH``: ``{workdir}/keys/released.jws`` (the script creates the 0700 directory);
* ``HOME``/``TMPDIR`` under the workdir;
* on a virtual clock, ``PYTHONPATH`` with a ``sitecustomize`` that routes ``time.time``,
  ``time.monotonic`` and ``time.sleep`` to the twin's clock endpoints (``SKR_TWIN_CLOCK_URL``).

The VM proves itself to the twin's MAA with a per-VM secret kept in ``{workdir}/.vtpm/vm.json``
(0600), read only by the tool wrappers, never part of the script's environment.

Busy accounting on a virtual clock: whoever runs the process should hold the clock busy while it
runs, through ``with hold_busy(twin, env):`` (or ``claim_busy``/``drop_busy``) — the clock's
``sleep`` endpoint then releases that hold while virtual time passes and takes it back afterwards.
Run commands do this themselves.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from localdev.twin.attached import attached
from localdev.twin.maa import signer_for
from localdev.twin.model import SimVm

if TYPE_CHECKING:
    from localdev.twin.core import Twin

TOOLS_DIR = Path(__file__).resolve().parent / "vmtools"
CLOCK_HOOK_DIR = TOOLS_DIR / "clockhook"
TOOLS = {"AttestationClient": "attestation_client.py", "AzureAttestSKR": "azure_attest_skr.py"}
MAX_SLEEP_SECONDS = 7 * 86_400.0


@dataclass
class ClockLease:
    """One sandboxed process's claim on the clock: whether it currently holds a busy count."""

    run_id: str
    held: bool = False
    closed: bool = False


@dataclass
class SandboxClock:
    """The leases of one twin, guarded by one lock (busy counts must never drift)."""

    leases: dict[str, ClockLease] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def lease(self, run_id: str) -> ClockLease:
        with self.lock:
            return self.leases.setdefault(run_id, ClockLease(run_id))


def _clock_state(twin: Twin) -> SandboxClock:
    return attached(twin, "sandbox.clock", SandboxClock)


def prepare_sandbox(twin: Twin, vm: SimVm, workdir: str | os.PathLike[str], *, interpreter: str | None = None,
                    run_id: str | None = None) -> dict[str, str]:
    """Create ``workdir`` (tools, vTPM state) and return the environment of a process inside ``vm``."""
    from localdev.twin.imds import imds_url

    root = Path(workdir).resolve()
    python = interpreter or sys.executable
    run = run_id or uuid.uuid4().hex
    bin_dir, vtpm_dir, home, tmp = root / "bin", root / ".vtpm", root / "home", root / "tmp"
    for directory in (bin_dir, home, tmp):
        directory.mkdir(parents=True, exist_ok=True)
    vtpm_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config_path = vtpm_dir / "vm.json"
    config = {"vm_id": vm.vm_id, "secret": signer_for(twin).vm_secret(vm.vm_id), "os_type": vm.os_type,
              "ca_bundle": twin.ca_bundle_path}
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    for command, script in TOOLS.items():
        _write_executable(bin_dir / command,
                          f"#!/bin/sh\nSKR_TWIN_VM_CONFIG={shlex.quote(str(config_path))} "
                          f"exec {shlex.quote(python)} {shlex.quote(str(TOOLS_DIR / script))} \"$@\"\n")
    for alias in ("python3", "python"):
        _write_executable(bin_dir / alias, f"#!/bin/sh\nexec {shlex.quote(python)} \"$@\"\n")
    env = {
        "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")]),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "SKR_IMDS_URL": imds_url(twin, vm),
        "SKR_CA_BUNDLE": twin.ca_bundle_path,
        "SKR_OUTPUT_PATH": str(root / "keys" / "released.jws"),
    }
    if twin.clock.kind == "virtual":
        _clock_state(twin).lease(run)
        env.update(PYTHONPATH=str(CLOCK_HOOK_DIR), SKR_TWIN_CLOCK_URL=f"{twin.urls.imds.rstrip('/')}/_twin/clock",
                   SKR_TWIN_CLOCK_RUN=run)
    return env


def _write_executable(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)


def claim_busy(twin: Twin, env: dict[str, str], *, already_held: bool = False) -> None:
    """Count the sandboxed process as busy on the twin clock (``already_held``: adopt a count taken earlier)."""
    run_id = env.get("SKR_TWIN_CLOCK_RUN")
    if run_id is None:
        if not already_held:
            twin.clock.acquire_busy()
        return
    state = _clock_state(twin)
    lease = state.lease(run_id)
    with state.lock:
        if not already_held:
            twin.clock.acquire_busy()
        lease.held, lease.closed = True, False


def drop_busy(twin: Twin, env: dict[str, str]) -> None:
    """End the process's busy claim (whether or not a virtual sleep currently holds it released)."""
    run_id = env.get("SKR_TWIN_CLOCK_RUN")
    if run_id is None:
        twin.clock.release_busy()
        return
    state = _clock_state(twin)
    with state.lock:
        lease = state.leases.pop(run_id, None)
        if lease is not None:
            if lease.held:
                twin.clock.release_busy()
            lease.held, lease.closed = False, True


@contextmanager
def hold_busy(twin: Twin, env: dict[str, str]) -> Iterator[None]:
    """Hold the clock busy for the sandboxed process while the block runs (its virtual sleeps excepted)."""
    claim_busy(twin, env)
    try:
        yield
    finally:
        drop_busy(twin, env)


async def _virtual_sleep(twin: Twin, run_id: str, seconds: float) -> None:
    state = _clock_state(twin)
    with state.lock:
        lease = state.leases.get(run_id)
        released = lease is not None and lease.held
        if lease is not None and released:
            twin.clock.release_busy()
            lease.held = False
    twin.clock.release_busy()  # the hold TwinMiddleware takes for this very request
    try:
        await twin.clock.sleep_async(seconds)
    finally:
        twin.clock.acquire_busy()
        if lease is not None and released:
            with state.lock:
                if not lease.closed:
                    twin.clock.acquire_busy()
                    lease.held = True


def clock_routes(twin: Twin) -> list[BaseRoute]:
    """``POST /_twin/clock/now`` and ``/_twin/clock/sleep?seconds=S&run=R`` (the sitecustomize hook)."""

    async def now(request: Request) -> JSONResponse:
        return JSONResponse({"now": twin.clock.time()})

    async def sleep(request: Request) -> JSONResponse:
        try:
            seconds = float(request.query_params.get("seconds", ""))
        except ValueError:
            return JSONResponse({"error": "seconds must be a number"}, status_code=400)
        if not 0 <= seconds <= MAX_SLEEP_SECONDS:
            return JSONResponse({"error": f"seconds must be within [0, {MAX_SLEEP_SECONDS:.0f}]"}, status_code=400)
        await _virtual_sleep(twin, request.query_params.get("run", ""), seconds)
        return JSONResponse({"now": twin.clock.time()})

    return [
        Route("/_twin/clock/now", now, methods=["GET", "POST"]),
        Route("/_twin/clock/sleep", sleep, methods=["POST"]),
    ]
