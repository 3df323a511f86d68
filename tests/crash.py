"""A fileconsul push or rollback that dies (SIGKILL, no clean-up) just before its Nth
transaction that writes files reaches Consul, once the ones before it have landed: what a crash
leaves behind.

    python -m tests.crash ADDR PREFIX BASEPATH N [ROLLBACK-TO]
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx

from fileconsul import config, revisions, sync
from fileconsul.consul import ConsulClient
from fileconsul.run import Run
from tests.conftest import is_write_txn


class Crashing(httpx.HTTPTransport):
    def __init__(self, prefix: str, count: int) -> None:
        super().__init__()
        self.files = f'"Key":"{prefix}/'.encode()
        self.count = count
        self.sent = 0
        self.landed = 0
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if not (is_write_txn(request) and self.files in body and b'"Verb":"set"' in body):
            return super().handle_request(request)
        with self.lock:
            self.sent += 1
            mine = self.sent
        if mine == self.count:
            deadline = time.monotonic() + 10
            while self.landed < self.count - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)
        response = super().handle_request(request)
        with self.lock:
            self.landed += 1
        return response


def main() -> None:
    addr, prefix, basepath, count = sys.argv[1:5]
    settings = config.settings(addr=addr, prefix=prefix, basepath=Path(basepath), env={})
    client = ConsulClient(settings.consul, transport=Crashing(prefix, int(count)))
    run = Run(settings, client)
    if len(sys.argv) > 5:
        options = revisions.RollbackOptions(node="crashing-node", force=True)
        revisions.rollback(run, int(sys.argv[5]), options)
    else:
        sync.push(run, sync.PushOptions(node="crashing-node"))
    sys.exit(f"the push ended before its file transaction number {count}")


if __name__ == "__main__":
    main()
