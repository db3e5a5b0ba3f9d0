"""Executes run-command scripts for simulated VMs: one at a time per VM, for real, in a sandbox.

Like the Linux run-command handler, the script is written to ``script.sh`` and started with
``/bin/bash -c <path> <unnamed args>`` (so a ``#!/usr/bin/env python3`` script runs under the
sandbox's ``python3``), named parameters become environment variables, and stdout/stderr are
kept (the API shows their last 4,096 bytes). Windows VMs run ``script.ps1`` with ``pwsh`` when it
is installed; without it their runs fail with a message saying so.

Timing on the twin clock: the result becomes visible at ``max(start + duration, script end)``
(``TwinConfig.run_command_duration_seconds``); ``timeout`` kills a script still running at
``start + timeout`` (state ``TimedOut``). The clock is held busy while the script runs, except
during its virtual sleeps (see ``sandbox``).

Faults (``twin.faults``, match ``vm``): ``runcommand_hang`` (never runs; TimedOut at the timeout),
``runcommand_timeout`` (TimedOut when the result would be visible), ``vm_delete_during_run`` (the
VM is deleted ``seconds`` after start, default half the duration; the run fails).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from localdev.twin.attached import attached
from localdev.twin.model import SimVm
from localdev.twin.sandbox import claim_busy, drop_busy, prepare_sandbox

if TYPE_CHECKING:
    from localdev.twin.core import Twin

OUTPUT_LIMIT = 4096
FINAL_STATES = ("Succeeded", "Failed", "TimedOut", "Canceled")


class VmBusyError(Exception):
    """Another run command is executing on the VM (ARM answers 409 Conflict)."""


@dataclass
class RunSettings:
    """How the twin runs scripts (change through ``executor_for(twin).settings``)."""

    interpreter: str = field(default_factory=lambda: os.environ.get("SKR_TWIN_VM_PYTHON", sys.executable))
    default_timeout_seconds: float = 5400.0  # 90 minutes, the run-command maximum
    real_timeout_seconds: float = 600.0  # safety net in wall-clock time (a script stuck for real)
    keep_sandboxes: bool = False  # keep per-run directories after the command is deleted
    workroot: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="skr-twin-runs-")))


@dataclass
class Execution:
    """One script run on one VM."""

    id: str
    vm: SimVm
    script: str | None  # inline text; None -> fetched from script_uri
    script_uri: str | None
    args: list[str]
    params: dict[str, str]
    timeout: float
    start_time: float
    state: str = "Pending"
    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    message: str = ""
    end_time: float | None = None
    visible_at: float | None = None
    workdir: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    on_started: list[Callable[[Execution], None]] = field(default_factory=list)
    on_finished: list[Callable[[Execution], None]] = field(default_factory=list)
    timers: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def output(self) -> str:
        return tail(self.stdout)

    @property
    def error(self) -> str:
        return tail(self.stderr)


def tail(data: bytes, limit: int = OUTPUT_LIMIT) -> str:
    """The last ``limit`` bytes as text (a split multi-byte character at the cut is dropped)."""
    return data[-limit:].decode("utf-8", "ignore") if len(data) > limit else data.decode("utf-8", "replace")


class Executor:
    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self.settings = RunSettings()
        self._lock = threading.Lock()
        self.running: dict[str, Execution] = {}  # VM key -> its executing command

    def busy(self, vm: SimVm) -> Execution | None:
        with self._lock:
            return self.running.get(vm.key)

    def start(self, vm: SimVm, *, script: str | None, script_uri: str | None = None, args: list[str] | None = None,
              params: dict[str, str] | None = None, timeout: float | None = None,
              on_started: Callable[[Execution], None] | None = None,
              on_finished: Callable[[Execution], None] | None = None) -> Execution:
        """Start a run now (raises VmBusyError when the VM already runs one)."""
        twin = self.twin
        execution = Execution(id=uuid.uuid4().hex, vm=vm, script=script, script_uri=script_uri, args=args or [],
                              params=params or {}, timeout=timeout or self.settings.default_timeout_seconds,
                              start_time=twin.clock.time())
        execution.on_started += [on_started] if on_started else []
        execution.on_finished += [on_finished] if on_finished else []
        with self._lock:
            if vm.key in self.running:
                raise VmBusyError(vm.resource_id)
            self.running[vm.key] = execution
        execution.state = "Running"
        execution.timers.append(twin.clock.call_at(execution.start_time + execution.timeout,
                                                   lambda: self._timed_out(execution)))
        delete_fault = twin.faults.active("vm_delete_during_run", service="arm", vm=vm.resource_id)
        if delete_fault is not None:
            delay = float(delete_fault.params.get("seconds", twin.config.run_command_duration_seconds / 2))
            execution.timers.append(twin.clock.call_at(execution.start_time + delay,
                                                       lambda: self._delete_vm(execution)))
        if twin.faults.active("runcommand_hang", service="arm", vm=vm.resource_id) is not None:
            self._notify(execution.on_started, execution)
            return execution  # only the timeout ends it
        if twin.faults.active("runcommand_timeout", service="arm", vm=vm.resource_id) is not None:
            self._notify(execution.on_started, execution)
            self._finish_at(execution, execution.start_time + twin.config.run_command_duration_seconds,
                            "TimedOut", "The script execution timed out.")
            return execution
        twin.clock.acquire_busy()  # handed to the worker thread, which releases it
        threading.Thread(target=self._run, args=(execution,), name=f"runcmd-{vm.name}", daemon=True).start()
        return execution

    # ----------------------------------------------------------------------- the worker
    def _run(self, execution: Execution) -> None:
        twin = self.twin
        env: dict[str, str] | None = None
        try:
            workdir = self.settings.workroot / f"{execution.vm.name}-{execution.id[:12]}"
            env = prepare_sandbox(twin, execution.vm, workdir, interpreter=self.settings.interpreter,
                                  run_id=execution.id)
            claim_busy(twin, env, already_held=True)
            execution.workdir = workdir
            script = execution.script if execution.script is not None else _download(twin, execution.script_uri)
            env.update({k: v for k, v in execution.params.items() if v != ""})
            argv = _command_line(execution, workdir, script)
            with execution.lock:
                if execution.done:
                    return
                execution.process = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE,
                                                     stderr=subprocess.PIPE, start_new_session=True)
            self._notify(execution.on_started, execution)
            try:
                out, err = execution.process.communicate(timeout=self.settings.real_timeout_seconds)
            except subprocess.TimeoutExpired:
                _kill(execution.process)
                out, err = execution.process.communicate()
                execution.stdout, execution.stderr = out, err
                self._finish(execution, "Failed", "The script did not finish within the twin's real-time limit.")
                return
            execution.stdout, execution.stderr = out, err
            code = execution.process.returncode
            if execution.done:
                return  # timed out, canceled or the VM went away while it ran
            execution.exit_code = code
            visible = max(execution.start_time + twin.config.run_command_duration_seconds, twin.clock.time())
            if code == 0:
                self._finish_at(execution, visible, "Succeeded", "Execution completed")
            else:
                self._finish_at(execution, visible, "Failed", f"Execution completed with exit code {code}")
        except _ScriptFetchError as exc:
            self._finish(execution, "Failed", str(exc))
        except OSError as exc:
            self._finish(execution, "Failed", f"The script could not be started: {exc.strerror or exc}")
        finally:
            if env is not None:
                drop_busy(twin, env)
            else:
                twin.clock.release_busy()

    # ------------------------------------------------------------------- transitions
    def _finish_at(self, execution: Execution, when: float, state: str, message: str) -> None:
        execution.visible_at = when
        if when <= self.twin.clock.time():
            self._finish(execution, state, message)
            return
        execution.timers.append(self.twin.clock.call_at(when, lambda: self._finish(execution, state, message)))

    def _finish(self, execution: Execution, state: str, message: str) -> None:
        vm_gone = self.twin.find_vm(execution.vm.resource_id) is None
        with execution.lock:
            if execution.done:
                return
            if vm_gone and state != "Canceled":
                state, message = "Failed", "The virtual machine was deleted while the run command was executing."
            execution.state, execution.message = state, message
            execution.end_time = self.twin.clock.time()
            process = execution.process
        for timer in execution.timers:
            timer.cancel()
        if process is not None and process.poll() is None:
            _kill(process)
        with self._lock:
            if self.running.get(execution.vm.key) is execution:
                del self.running[execution.vm.key]
        self._notify(execution.on_finished, execution)

    def _timed_out(self, execution: Execution) -> None:
        if execution.process is not None and execution.process.poll() is not None:
            return  # the script already ended; only its result is still in flight
        self._finish(execution, "TimedOut", f"The script did not finish within {execution.timeout:g} seconds.")

    def _delete_vm(self, execution: Execution) -> None:
        if execution.done:
            return
        self.twin.delete_vm(execution.vm.resource_id)
        self._finish(execution, "Failed", "The virtual machine was deleted while the run command was executing.")

    def cancel(self, execution: Execution) -> None:
        self._finish(execution, "Canceled", "The run command was deleted while it was executing.")

    def discard(self, execution: Execution) -> None:
        """Forget a finished run's sandbox (it may hold a released key)."""
        if execution.workdir is not None and not self.settings.keep_sandboxes:
            shutil.rmtree(execution.workdir, ignore_errors=True)

    def _notify(self, callbacks: list[Callable[[Execution], None]], execution: Execution) -> None:
        for callback in callbacks:
            callback(execution)


class _ScriptFetchError(Exception):
    """The script cannot be obtained or started (the run fails with this message)."""


def _command_line(execution: Execution, workdir: Path, script: str) -> list[str]:
    """How the guest agent starts the script: bash on Linux, PowerShell (when installed) on Windows."""
    args = [a for a in execution.args if a]
    if execution.vm.os_type == "Windows":
        pwsh = shutil.which("pwsh")
        if pwsh is None:
            raise _ScriptFetchError("PowerShell (pwsh) is not installed on this machine: the twin cannot run "
                                    "scripts for Windows VMs.")
        path = workdir / "script.ps1"
        path.write_text(script, encoding="utf-8")
        return [pwsh, "-NoProfile", "-NonInteractive", "-File", str(path), *args]
    path = workdir / "script.sh"
    path.write_text(script, encoding="utf-8")
    path.chmod(0o700)
    return ["/bin/bash", "-c", " ".join([shlex.quote(str(path)), *(shlex.quote(a) for a in args)])]


def _download(twin: Twin, uri: str | None) -> str:
    """``source.scriptUri``: https/http (twin CA trusted) or ``file://``."""
    if not uri:
        raise _ScriptFetchError("The run command has no script.")
    try:
        if uri.startswith("file://"):
            return Path(uri[len("file://"):]).read_text(encoding="utf-8")
        context = ssl.create_default_context(cafile=twin.ca_bundle_path)
        response = httpx.get(uri, verify=context, timeout=30.0, trust_env=False)
        response.raise_for_status()
        return response.text
    except (OSError, httpx.HTTPError, UnicodeDecodeError) as exc:
        raise _ScriptFetchError(f"Failed to download the script from scriptUri: {type(exc).__name__}.") from exc


def _kill(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()


def executor_for(twin: Twin) -> Executor:
    """The twin's executor (its per-run sandboxes are removed when the twin goes away)."""

    def build() -> Executor:
        executor = Executor(twin)
        weakref.finalize(twin, shutil.rmtree, executor.settings.workroot, True)
        return executor

    return attached(twin, "runexec.executor", build)
