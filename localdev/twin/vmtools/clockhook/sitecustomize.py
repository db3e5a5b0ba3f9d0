"""Puts a script running "inside" a simulated VM on the twin's virtual clock.

Loaded automatically (``sitecustomize``) when the sandbox adds this directory to PYTHONPATH.
``time.time``/``time.monotonic`` ask the twin for ``now``; ``time.sleep`` asks the twin to let
virtual time pass (the twin releases the run command's busy hold meanwhile). Standard library
only, Python 3.8+.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.parse

_URL = os.environ.get("SKR_TWIN_CLOCK_URL", "")
_RUN = os.environ.get("SKR_TWIN_CLOCK_RUN", "")
_real_time = time.time
_real_sleep = time.sleep
_local = threading.local()
_last = [0.0]


def _call(path: str, query: dict, timeout: float | None) -> float:
    parts = urllib.parse.urlsplit(_URL)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("POST", parts.path.rstrip("/") + path + "?" + urllib.parse.urlencode(query))
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"twin clock answered HTTP {response.status}")
        return float(json.loads(body.decode("utf-8"))["now"])
    finally:
        connection.close()


def _now() -> float:
    if getattr(_local, "busy", False):
        return _last[0] or _real_time()
    _local.busy = True
    try:
        _last[0] = _call("/now", {"run": _RUN}, 30.0)
        return _last[0]
    finally:
        _local.busy = False


def _sleep(seconds: float) -> None:
    if seconds is None or seconds <= 0 or getattr(_local, "busy", False):
        _real_sleep(max(0.0, seconds or 0.0))
        return
    _local.busy = True
    try:
        _last[0] = _call("/sleep", {"run": _RUN, "seconds": repr(float(seconds))}, None)
    finally:
        _local.busy = False


def _install() -> None:
    if not _URL:
        return
    time.time = _now
    time.monotonic = _now
    time.time_ns = lambda: int(_now() * 1e9)
    time.monotonic_ns = lambda: int(_now() * 1e9)
    time.sleep = _sleep


_install()
