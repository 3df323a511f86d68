"""The fileconsul command line, run with one fault injected at a chosen moment:

    FILECONSUL_TEST_FAULT=kill:3 python -m tests.fault push --addr ... --prefix ...

`kill:N`, `interrupt:N`, `interrupt-twice:N`: SIGKILL (no clean-up), or SIGINT once or twice,
just before the Nth transaction that writes files reaches Consul, once the ones before it
have landed. `interrupt-at-stage`, `interrupt-at-rename`: SIGINT as the first file is staged,
or as the first staged file is renamed into place.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import httpx

from fileconsul.cli import main
from fileconsul.model.paths import TMP_PREFIX
from tests.conftest import is_write_txn

_real_handle = httpx.HTTPTransport.handle_request


def _at_batch(deliver: int, count: int, prefix: str) -> None:
    """Send signal `deliver` (SIGINT once or twice: pass -SIGINT for twice) before the
    `count`th transaction that sets files under `prefix`."""
    state = {"sent": 0, "landed": 0}
    lock = threading.Lock()
    files = f'"Key":"{prefix}/'.encode()

    def handle(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if not (is_write_txn(request) and files in body and b'"Verb":"set"' in body):
            return _real_handle(self, request)
        with lock:
            state["sent"] += 1
            mine = state["sent"]
        if mine == count:
            deadline = time.monotonic() + 10
            while state["landed"] < count - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            if deliver == signal.SIGKILL:
                os.kill(os.getpid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGINT)
            if deliver < 0:
                time.sleep(0.2)
                os.kill(os.getpid(), signal.SIGINT)
        response = _real_handle(self, request)
        with lock:
            state["landed"] += 1
        return response

    httpx.HTTPTransport.handle_request = handle  # type: ignore[method-assign]


def _at_first(call: str) -> None:
    """SIGINT at the first staged write (`open`) or rename into place (`rename`)."""
    real = getattr(os, call)
    first = threading.Lock()  # staging threads race to the first file: one signal only

    def wrapped(*args: object, **kw: object) -> object:
        name = str(args[0])
        if TMP_PREFIX in name and (call == "rename" or "dir_fd" in kw) and first.acquire(False):
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kw)

    setattr(os, call, wrapped)


def install(fault: str, prefix: str) -> None:
    kind, _, count = fault.partition(":")
    if kind == "kill":
        _at_batch(signal.SIGKILL, int(count), prefix)
    elif kind == "interrupt":
        _at_batch(signal.SIGINT, int(count), prefix)
    elif kind == "interrupt-twice":
        _at_batch(-signal.SIGINT, int(count), prefix)
    elif kind == "interrupt-at-stage":
        _at_first("open")
    elif kind == "interrupt-at-rename":
        _at_first("rename")
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    install(os.environ["FILECONSUL_TEST_FAULT"], sys.argv[sys.argv.index("--prefix") + 1])
    main()
