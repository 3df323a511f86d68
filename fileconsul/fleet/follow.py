"""Following a fleet as it moves, for the dashboard: blocking queries on the head with the
halt (one small string prefix holds both) and on the fleet reports, each answer folded into
one snapshot that readers wait on.

Each loop follows Consul's blocking-query rules as `watch` does: the index is never below 1,
an index that goes backwards starts over from a fresh read, wake-ups are rate-limited, and an
unreachable agent or a refusing ACL is retried with a doubling back-off capped at 30 s (the
snapshot says so meanwhile).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from fileconsul.commands import history
from fileconsul.commands.context import Context
from fileconsul.errors import FileconsulError
from fileconsul.fleet import reports, rollout
from fileconsul.fleet.reports import Fleet
from fileconsul.model.records import Commit, Head
from fileconsul.model.tree import KVEntry, parse_head
from fileconsul.store.layout import halt_key, head_and_halt_prefix, head_key, nodes_prefix

#: Revisions the snapshot lists, newest first.
LOG_SHOWN = 50


@dataclass(frozen=True)
class Snapshot:
    """What the fleet looks like now; `version` moves whenever anything in it does."""

    prefix: str
    version: int = 0
    head: Head | None = None
    halt: rollout.Halt | None = None
    fleet: Fleet = field(default_factory=lambda: Fleet(0, []))
    log: tuple[Commit, ...] = ()
    #: Why Consul cannot be followed now (retrying), or None.
    trouble: str | None = None


@dataclass(frozen=True)
class FollowOptions:
    #: Longest blocking query.
    wait: float = 300.0
    #: Least time between two reads of one loop: a fleet's reports landing together are
    #: folded into one snapshot.
    min_interval: float = 0.2
    max_backoff: float = 30.0


class Follower:
    """Two threads holding blocking queries; `wait_for` hands readers each new snapshot."""

    def __init__(self, ctx: Context, options: FollowOptions | None = None) -> None:
        self.ctx, self.options = ctx, options or FollowOptions()
        self._snapshot = Snapshot(ctx.prefix)
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self._reports: list[KVEntry] = []
        self._threads = [
            threading.Thread(target=self._loop, args=(self._head,), name="follow-head"),
            threading.Thread(target=self._loop, args=(self._nodes,), name="follow-nodes"),
        ]
        for thread in self._threads:
            thread.daemon = True  # a blocking query is left to end with the process

    def start(self) -> Follower:
        self.refresh()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with self._changed:
            self._changed.notify_all()

    @property
    def snapshot(self) -> Snapshot:
        with self._changed:
            return self._snapshot

    def wait_for(self, version: int, timeout: float) -> Snapshot:
        """The first snapshot after `version`, or the current one after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._snapshot.version != version or self._stopped.is_set(), timeout
            )
            return self._snapshot

    def refresh(self) -> None:
        """Read everything now (after an action, so that its answer shows at once)."""
        try:
            self._head(None)
            self._nodes(None)
        except FileconsulError as exc:
            self._update(trouble=f"{exc}; retrying")

    # -- the loops --------------------------------------------------------------------------

    def _loop(self, read: Callable[[int | None], int]) -> None:
        index: int | None = None
        backoff = 0.0
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                new = read(index)
            except FileconsulError as exc:
                backoff = min(max(backoff * 2, 0.5), self.options.max_backoff)
                self._update(trouble=f"{exc}; retrying in {backoff:.1f}s")
                self._stopped.wait(backoff)
                index = None
                continue
            if backoff:
                backoff = 0.0
                self._update(trouble=None)
            # Backwards (a restored or new cluster): start over from a fresh read.
            index = None if index is not None and new < index else max(new, 1)
            self._stopped.wait(max(0.0, started + self.options.min_interval - time.monotonic()))

    def _head(self, index: int | None) -> int:
        ctx = self.ctx
        wait = self.options.wait if index is not None else None
        entries, new = ctx.client.recurse(
            head_and_halt_prefix(ctx.prefix), index=index, wait=wait, stale=ctx.stale
        )
        found = {e.key: e for e in entries}
        entry = found.get(head_key(ctx.prefix))
        head = parse_head(entry) if entry is not None else None
        halt = rollout.read_halt(found.get(halt_key(ctx.prefix)))
        now = self.snapshot
        log = now.log
        if head is None:
            log = ()
        elif now.head is None or head.index != now.head.index or not log:
            log = tuple(history.log(ctx, LOG_SHOWN).commits)
        self._update(head=head, halt=halt, log=log)
        return new

    def _nodes(self, index: int | None) -> int:
        ctx = self.ctx
        wait = self.options.wait if index is not None else None
        entries, new = ctx.client.recurse(
            nodes_prefix(ctx.prefix), index=index, wait=wait, stale=ctx.stale
        )
        with self._changed:
            self._reports = entries
        self._update()
        return new

    def _update(self, **changes: object) -> None:
        """Fold `changes` into the snapshot (the fleet computed again from the head, the halt
        and the reports); readers are woken when something differs."""
        with self._changed:
            now = self._snapshot
            new = replace(now, **changes)  # type: ignore[arg-type]
            revision = new.head.revision if new.head else 0
            fleet = reports.fleet_of(self.ctx.prefix, revision, self._reports, new.halt)
            new = replace(new, fleet=fleet)
            if new == replace(now, version=new.version):
                return
            self._snapshot = replace(new, version=now.version + 1)
            self._changed.notify_all()
