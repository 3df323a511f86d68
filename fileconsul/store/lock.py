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

from fileconsul.errors import LockHeld
from fileconsul.store.client import ConsulClient
from fileconsul.store.layout import lock_key

#: Seconds of a push session's TTL, Consul's least: Consul ends the session of a pusher that
#: died (and so frees the lock) twice this after its last renewal, 20 s, well within the
#: default --lock-wait of 30 s. It is renewed every third of it while the push writes.
LOCK_TTL = 10


@dataclass
class Lease:
    """The push lock, held by a session that must be renewed within its TTL."""

    client: ConsulClient
    session: str
    renewed: float = field(default_factory=time.monotonic)

    def renew_if_due(self) -> None:
        if time.monotonic() - self.renewed > LOCK_TTL / 3:
            self.client.session_renew(self.session)
            self.renewed = time.monotonic()


@contextmanager
def push_lock(client: ConsulClient, prefix: str, wait: float) -> Iterator[Lease]:
    """Hold the prefix's push lock with a session, so pushes never interleave and pulls wait
    (up to `wait` seconds for another push). Its value names the holder, for whoever finds
    its values."""
    holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    with client.session(f"fileconsul push {prefix}", ttl=LOCK_TTL) as session:
        deadline = time.monotonic() + wait
        while not client.put(lock_key(prefix), holder.encode(), acquire=session):
            wait_for_lock(client, lock_key(prefix), deadline)
        yield Lease(client, session)


def wait_for_lock(client: ConsulClient, key: str, deadline: float) -> None:
    """Block until the lock `key` is free, or raise LockHeld at the deadline."""
    index = None
    while (left := deadline - time.monotonic()) > 0:
        entry, index = client.get(key, index=index, wait=min(left, 10.0))
        if entry is None or not entry.session:
            return
    raise LockHeld(
        f"a push has held {key} past the wait; retry when it finishes (or raise --lock-wait)"
    )
