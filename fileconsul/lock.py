"""The push lock: a session holds `<prefix>.fileconsul/lock` while a large push writes, so
pushes never interleave and readers wait for a push under way."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fileconsul.keys import lock_key
from fileconsul.remote import wait_for_lock
from fileconsul.run import Run

#: Seconds of a push session's TTL: Consul ends the session of a pusher that died (and so
#: frees the lock) within twice this, its grace period included.
LOCK_TTL = 15


@dataclass
class Lease:
    """The push lock, held by a session that must be renewed within its TTL."""

    run: Run
    session: str
    renewed: float = field(default_factory=time.monotonic)

    def renew_if_due(self) -> None:
        if time.monotonic() - self.renewed > LOCK_TTL / 3:
            self.run.client.session_renew(self.session)
            self.renewed = time.monotonic()


@contextmanager
def push_lock(run: Run) -> Iterator[Lease]:
    """Hold the prefix's push lock with a session, so pushes never interleave and pulls wait.
    Its value names the holder, for whoever finds its values."""
    holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    with run.client.session(f"fileconsul push {run.prefix}", ttl=LOCK_TTL) as session:
        deadline = time.monotonic() + run.lock_wait
        while not run.client.put(lock_key(run.prefix), holder.encode(), acquire=session):
            wait_for_lock(run.client, lock_key(run.prefix), deadline)
        yield Lease(run, session)
