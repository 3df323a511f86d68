"""Locks held by Consul sessions. The push lock: a session holds `<prefix>.fileconsul/lock`
while a large push writes, so pushes never interleave and readers wait for a push under way.
A standing lock: held for as long as its process runs (one replicator of several), and freed
by Consul when that process dies and its session's TTL runs out."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

from fileconsul.errors import FileconsulError, LockHeld
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
    holder = holder_value()
    with client.session(f"fileconsul push {prefix}", ttl=LOCK_TTL) as session:
        deadline = time.monotonic() + wait
        while not client.put(lock_key(prefix), holder, acquire=session):
            wait_for_lock(client, lock_key(prefix), deadline)
        yield Lease(client, session)


def holder_value(**facts: object) -> bytes:
    """What a lock's value says of its holder, for whoever finds it held."""
    fields = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), **facts}
    return json.dumps(fields).encode()


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


class StandingLock:
    """A key held by a session of its own for as long as this process runs, renewed within
    the session's TTL; one of several contenders holds it. When the holder dies, Consul ends
    its session (within twice the TTL: its grace period) and deletes the key, which wakes
    the others."""

    def __init__(self, client: ConsulClient, key: str, name: str, ttl: int) -> None:
        self.client, self.key, self.name, self.ttl = client, key, name, ttl
        self.session: str | None = None
        self.held = False
        self._renewed = 0.0
        self._index: int | None = None

    def acquire(self, holder: bytes) -> bool:
        """Take the key if it is free; whether this process holds it."""
        if self.session is None:
            self.session = self.client.session_create(self.name, ttl=self.ttl)
            self._renewed = time.monotonic()
        self.held = self.client.put(self.key, holder, acquire=self.session)
        return self.held

    def keep(self) -> bool:
        """Renew the session when a third of its TTL has passed, and check the key is still
        its own; whether this process still holds it."""
        if self.session is None or not self.held:
            return False
        if time.monotonic() - self._renewed >= self.ttl / 3:
            if not self.client.session_renew(self.session):
                self.session, self.held = None, False
                return False
            self._renewed = time.monotonic()
            entry, _ = self.client.get(self.key)
            self.held = entry is not None and entry.session == self.session
        return self.held

    def due_in(self) -> float:
        """Seconds until the session must be renewed."""
        return max(0.0, self._renewed + self.ttl / 3 - time.monotonic())

    def wait_free(self, wait: float) -> None:
        """Block until the key is free or changes, at most `wait` seconds (Consul's rules:
        an index that goes backwards starts over)."""
        entry, index = self.client.get(self.key, index=self._index, wait=wait)
        if entry is None or not entry.session:
            self._index = None
            return
        self._index = index if self._index is None or index >= self._index else None

    def release(self) -> None:
        """End the session: Consul deletes the key it held, which wakes the others (best
        effort: when Consul cannot be told now, the session's TTL ends it)."""
        session, self.session, self.held = self.session, None, False
        if session is not None:
            with suppress(FileconsulError):
                self.client.session_destroy(session)
