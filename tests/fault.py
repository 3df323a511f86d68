"""The fileconsul command line, run with one fault injected at a chosen moment:

    FILECONSUL_TEST_FAULT=kill:3 python -m tests.fault push --addr ... --prefix ...

`kill:N`, `interrupt:N`, `interrupt-twice:N`: SIGKILL (no clean-up), or SIGINT once or twice,
just before the Nth transaction that writes files reaches Consul, once the ones before it
have landed. `kill-before-head`: SIGKILL just before the transaction that moves the head
(every file of the push sent). `interrupt-at-stage`, `interrupt-at-rename`: SIGINT as the first
file is staged, or as the first staged file is renamed into place. `interrupt-in-submit`: SIGINT
inside the pull's thread pool's `submit`, just after it started a worker and before it noted it
(the moment a real Ctrl-C hits now and then).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

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


def _before_head(prefix: str) -> None:
    """SIGKILL as the transaction that moves the head is about to leave."""
    head = f'"Key":"{prefix}.fileconsul/head"'.encode()

    def handle(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if is_write_txn(request) and head in body and b'"Verb":"cas"' in body:
            os.kill(os.getpid(), signal.SIGKILL)
        return _real_handle(self, request)

    httpx.HTTPTransport.handle_request = handle  # type: ignore[method-assign]


def _in_submit() -> None:
    """SIGINT as the first worker of the pull's pool has started: the signal's handler runs as
    `start()` returns, inside the pool's `submit`. That worker's first item waits half a
    second, so that a worker the pool does not know of runs it after the pull cleaned up."""
    from concurrent.futures import thread

    real_start, real_run = threading.Thread.start, thread._WorkItem.run
    first = threading.Lock()

    def start(self: threading.Thread) -> None:
        real_start(self)
        if self.name.startswith("fileconsul-pull") and first.acquire(False):
            os.kill(os.getpid(), signal.SIGINT)

    def run(self: Any) -> None:
        if threading.current_thread().name.endswith("fileconsul-pull_0"):
            time.sleep(0.5)
        real_run(self)

    threading.Thread.start = start  # type: ignore[method-assign]
    thread._WorkItem.run = run  # type: ignore[method-assign]


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
    elif kind == "kill-before-head":
        _before_head(prefix)
    elif kind == "interrupt-in-submit":
        _in_submit()
    elif kind == "interrupt-at-stage":
        _at_first("open")
    elif kind == "interrupt-at-rename":
        _at_first("rename")
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    install(os.environ["FILECONSUL_TEST_FAULT"], sys.argv[sys.argv.index("--prefix") + 1])
    main()
