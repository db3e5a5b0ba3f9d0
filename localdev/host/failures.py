"""Error text the Functions host and the Durable extension produce, so failures read as in Azure.

* The Python worker reports ``f"{type(exc).__name__}: {exc}"`` plus a formatted traceback; the
  Functions host wraps it as ``RpcException`` whose message is
  ``"Result: Failure\\nException: <message>\\nStack: <stack>"``.
* ``TaskActivityShim`` turns an activity failure into TaskFailed with
  Reason ``"Activity function '<name>' failed: <that message>"`` and Details = the serialised cause.
* ``OutOfProcOrchestrationShim`` fails an orchestrator with
  ``"Orchestrator function '<name>' failed: <error>"`` and Details ``"Message: <error>, StackTrace: ..."``.
"""

from __future__ import annotations

import json
import os
import traceback

_RPC_EXCEPTION = "Microsoft.Azure.WebJobs.Script.Workers.Rpc.RpcException"


def worker_message(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # a __str__ that raises; the worker says the same
        return "Unhandled exception in function. Could not serialize original exception message."


_HOST_FRAMES = (f"{os.sep}localdev{os.sep}host{os.sep}", f"{os.sep}concurrent{os.sep}futures{os.sep}")


def _short(filename: str) -> str:
    """Paths relative to the app (or to site-packages), so histories do not carry machine paths."""
    cwd = os.getcwd() + os.sep
    if filename.startswith(cwd):
        return filename[len(cwd) :]
    marker = f"{os.sep}site-packages{os.sep}"
    return f"site-packages{os.sep}{filename.split(marker, 1)[1]}" if marker in filename else filename


def worker_stack(exc: BaseException) -> str:
    """The user's frames only (the worker's own frames would be noise, and so are the host's)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not any(p in f.filename for p in _HOST_FRAMES)]
    for frame in frames:
        _ = frame.line  # read the source line while the absolute path still resolves
        frame.filename = _short(frame.filename)
    return "".join(traceback.format_list(frames))


def rpc_exception_message(exc: BaseException) -> str:
    return f"Result: Failure\nException: {worker_message(exc)}\nStack: {worker_stack(exc)}"


def serialized_cause(exc: BaseException) -> str:
    """The shape of ``Utils.SerializeCause`` for the host's RpcException (not byte-identical)."""
    message = rpc_exception_message(exc)
    return json.dumps(
        {
            "$type": f"{_RPC_EXCEPTION}, Microsoft.Azure.WebJobs.Script",
            "ClassName": _RPC_EXCEPTION,
            "Message": message,
            "Data": None,
            "InnerException": None,
            "HelpURL": None,
            "StackTraceString": None,
            "RemoteStackTraceString": worker_stack(exc),
            "RemoteStackIndex": 0,
            "ExceptionMethod": None,
            "HResult": -2146233088,
            "Source": None,
            "WatsonBuckets": None,
            "RemoteMessage": worker_message(exc),
            "RemoteTypeName": type(exc).__name__,
            "IsUserException": False,
        }
    )


def activity_failure(name: str, exc: BaseException) -> tuple[str, str]:
    """(Reason, Details) of the TaskFailed event for an activity that raised ``exc``."""
    return f"Activity function '{name}' failed: {rpc_exception_message(exc)}", serialized_cause(exc)


def orchestrator_failure(name: str, error: str, stack: str = "") -> tuple[str, str]:
    """(Reason, Details) of a failed orchestration, as ``OrchestrationFailureException`` carries them."""
    return f"Orchestrator function '{name}' failed: {error}", f"Message: {error}, StackTrace: {stack}"


def custom_status_too_large(size_bytes: int, limit_kb: int) -> str:
    return (
        f"The UTF-16 size of the JSON-serialized payload must not exceed {limit_kb:,} KB. "
        f"The current payload size is {size_bytes / 1024:,.2f} KB."
    )
