"""`fileconsul replicate`: one tree carried from a source datacenter into others, revision by
revision, so that a node in any of them sees the source's history and pulls or watches as it
does there.

For each target one replicator of several is active: it holds `<prefix>.fileconsul/replicator`
there with a session of that datacenter; the others stand by, blocked on that key, and the
first to find it free takes over from the target's head. The active one blocks on the
source's head (Consul's blocking-query rules, as `watch` follows them) and, for each revision
the target lacks, reads its record and the contents it set that the target does not hold
already, and commits it there as the same revision: the head moved last, by check-and-set,
naming the source. A target that holds no revision, or is further behind than the source
keeps records, takes the source's head tree whole, as one commit, and says so.

Nothing is written from what could not be read: a source that cannot be reached, holds no
head, or does not hold every content of a revision is waited for (with a back-off, and one
line in the log), and the targets keep what they hold. A halt of a revision anywhere stops
it; a gate (`--min-current`, `--soak`) holds it until the source's fleet has taken it.
"""

from __future__ import annotations

import calendar
import json
import os
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace

from fileconsul.commands.context import Context
from fileconsul.errors import (
    EXIT_CHANGES,
    ConflictError,
    FileconsulError,
    InvalidInput,
    LockHeld,
    UsageError,
)
from fileconsul.fleet.carry import Carrier, Target
from fileconsul.fleet.metrics import ReplicationMetrics
from fileconsul.fleet.stages import Stages
from fileconsul.fleet.watch import Stopped, Stopper, Tell
from fileconsul.model import replica as rules
from fileconsul.model.records import Head
from fileconsul.model.replica import Gate, Standing
from fileconsul.model.tree import RemoteTree, parse_head
from fileconsul.store import read, replica
from fileconsul.store.client import ConsulClient, TxnFailed
from fileconsul.store.layout import head_key, meta_prefix, replicator_key
from fileconsul.store.lock import StandingLock, holder_value

#: Seconds of a replicator's session TTL: Consul frees the lock of one that died within twice
#: this (its grace period), and the standby takes over.
LOCK_TTL = 15
#: With a gate on the source's fleet, its reports are read at most once a second.
_FLEET_INTERVAL = 1.0
#: A blocking query shorter than this is not worth sending (a wait of 0 is Consul's default).
_SHORTEST_WAIT = 0.1


@dataclass(frozen=True)
class ReplicateOptions:
    source: str
    targets: tuple[str, ...]
    gate: Gate = field(default_factory=Gate)
    once: bool = False
    #: Replace a target's tree of its own (or a replica of another source) by the source's.
    adopt: bool = False
    #: Delete a target's tree when the source's was deleted whole.
    mirror_wipe: bool = False
    wait: float = 300.0
    min_interval: float = 0.05
    max_backoff: float = 30.0
    lock_ttl: int = LOCK_TTL


def replicate(
    ctx: Context,
    options: ReplicateOptions,
    stopper: Stopper,
    tell: Tell,
    metrics: ReplicationMetrics | None = None,
) -> int:
    """Carry the tree from `options.source` into each of `options.targets` until stopped
    (0), or, with `once`, one pass: 0 when every target holds the source's head, 1 when a
    revision was held back (a gate, a halt, a source without a head)."""
    _check_datacenters(ctx.client, options)
    with ExitStack() as stack:
        source = stack.enter_context(_client(ctx, options.source))
        targets = []
        for dc in options.targets:
            client = stack.enter_context(_client(ctx, dc))
            name = f"fileconsul replicate {ctx.prefix} {dc} {os.getpid()}"
            lock = StandingLock(client, replicator_key(ctx.prefix), name, options.lock_ttl)
            stack.callback(lock.release)
            targets.append(Target(dc, client, lock))
        replicator = Replicator(ctx, options, source, targets, stopper, tell, metrics)
        return replicator.run()


def _client(ctx: Context, dc: str) -> ConsulClient:
    return ConsulClient(replace(ctx.settings.consul, dc=dc))


def _check_datacenters(client: ConsulClient, options: ReplicateOptions) -> None:
    if options.source in options.targets:
        raise UsageError(f"--to {options.source} is the source itself: name other datacenters")
    known = client.datacenters()
    unknown = [dc for dc in (options.source, *options.targets) if dc not in known]
    if unknown:
        raise UsageError(
            f"Consul knows no datacenter {', '.join(unknown)} (it knows {', '.join(known)}); "
            "check --from and --to, and that the datacenters are joined over the WAN"
        )


class Replicator:
    """The loop: read the source's head, serve each target, block until something moves."""

    def __init__(
        self,
        ctx: Context,
        options: ReplicateOptions,
        source: ConsulClient,
        targets: list[Target],
        stopper: Stopper,
        tell: Tell,
        metrics: ReplicationMetrics | None,
    ) -> None:
        self.prefix, self.lock_wait = ctx.prefix, ctx.lock_wait
        self.options, self.source, self.targets = options, source, targets
        self.stopper, self.tell = stopper, tell
        self.metrics = metrics or ReplicationMetrics()
        self.carry = Carrier(
            ctx.prefix,
            source,
            options.source,
            ctx.lock_wait,
            stopper,
            tell,
            self.metrics,
            options.mirror_wipe,
        )
        self.stages = Stages(options.gate, (options.source, source))
        self.headless = False
        self.index: int | None = None
        self.mode = ""
        self.backoff = 0.0
        self.last_wake = 0.0
        self.counted: list[tuple[int, int]] = []

    def run(self) -> int:
        try:
            while True:
                try:
                    self._pass(self._source_head())
                    self._account()
                    if self.options.once:
                        return self._once_code()
                    self._block()
                    self.backoff = 0.0
                except FileconsulError as exc:
                    if self.options.once:
                        raise
                    self._back_off(exc)
                self._account()
        except Stopped:
            self.tell("stop", "stopped by a signal, between commits")
            return 0

    def _source_head(self) -> Head | None:
        entry, _ = self.source.get(head_key(self.prefix))
        self.headless = entry is None
        return None if entry is None else parse_head(entry)

    # -- one pass --------------------------------------------------------------------------

    def _pass(self, head: Head | None) -> None:
        self.carry.new_pass()
        now = time.monotonic()
        for target in self.targets:
            if now < target.retry_at:
                continue
            target.short = None
            try:
                self._serve(target, head)
                target.backoff = 0.0
            except FileconsulError as exc:
                if self.options.once:
                    raise
                self._retry(target, exc)

    def _serve(self, t: Target, head: Head | None) -> None:
        if not self._hold(t):
            return
        if head is None:
            self.carry.headless_source(t)
            return
        if self.options.mirror_wipe and self.carry.mirrored_wipe(t, head):
            return
        tree = self.carry.target_tree(t)
        standing = self._standing(t, tree, head)
        t.held = tree.revision
        if standing.kind == "current":
            t.known, t.whole, t.diverged, t.said = tree.known, None, None, ""
            self.carry.gauge(t, head)
            return
        if standing.kind == "refused":
            if self.options.once:
                raise InvalidInput(f"{t.dc}: {standing.reason}")
            t.short = standing.reason
            self.carry.say(t, "refused", f"{t.dc}: {standing.reason}", level="error")
            return
        self._behind(t, tree, head, standing)

    def _behind(self, t: Target, tree: RemoteTree, head: Head, standing: Standing) -> None:
        whole = standing.kind == "whole"
        revisions = [head.revision] if whole else list(range(tree.revision + 1, head.revision + 1))
        if t.behind_revision != tree.revision + 1:
            t.behind_revision = tree.revision + 1
            t.behind_since = self._committed_at(head, t.behind_revision, whole)
        self.carry.gauge(t, head)
        places = [(x.dc, x.client) for x in self.targets]
        verdict, halts = self.stages.judge(self.prefix, places, revisions)
        t.wake_at = None if verdict.wake_in is None else time.monotonic() + verdict.wake_in
        if verdict.held is not None:
            t.short = verdict.held
            upto = "" if verdict.revision is None else f"; committing up to {verdict.revision}"
            self.carry.say(t, "held", f"{t.dc}: {verdict.held}{upto}")
        if verdict.revision is None:
            return
        if whole:
            self.carry.take_whole(t, tree, head, standing.reason)
        else:
            self.carry.follow(t, tree, head, verdict.revision, halts)

    # -- the lock --------------------------------------------------------------------------

    def _hold(self, t: Target) -> bool:
        """Whether this replicator writes `t`: it holds its lock, or takes it now."""
        key = replicator_key(self.prefix)
        if t.lock.held:
            if t.lock.keep():
                return True
            self.tell("lock", f"{t.dc}: lost {key}; standing by", level="warning", target=t.dc)
            self.metrics.holding(t.dc, False)
            t.known = None
        holder = holder_value(source=self.options.source, target=t.dc)
        if t.lock.acquire(holder):
            t.said, t.known = "", None
            self.tell("active", f"{t.dc}: this replicator writes there now ({key})", target=t.dc)
            self.metrics.holding(t.dc, True)
            return True
        who = self._holder(t)
        if self.options.once:
            raise LockHeld(f"another replicator writes {t.dc} ({who}); nothing was written there")
        t.short = f"another replicator writes {t.dc}"
        self.carry.say(
            t, "standby", f"{t.dc}: another replicator writes there ({who}); standing by"
        )
        return False

    def _holder(self, t: Target) -> str:
        entry, _ = t.client.get(replicator_key(self.prefix))
        try:
            found = json.loads(entry.value) if entry is not None else {}
            return f"{found['host']}, pid {found['pid']}"
        except (ValueError, KeyError, TypeError):
            return "its holder is not named"

    # -- where the target stands -------------------------------------------------------------

    def _standing(self, t: Target, tree: RemoteTree, head: Head) -> Standing:
        kept = None
        # A head this replicator committed from the source's record needs no look at that
        # record again: if the source's history started over since, the next revision's
        # digest does not follow (Diverged), and that is refused as a look would refuse it.
        ours = tree.head is not None and t.committed == tree.head.commit.fields()
        if tree.head is not None and head.oldest <= tree.revision < head.revision and not ours:
            with suppress(TxnFailed, ValueError):
                kept = self.carry.records([tree.revision])[0][0]
        standing = rules.standing(
            head,
            tree.head,
            source_dc=self.options.source,
            target_dc=t.dc,
            kept=kept,
            has_files=tree.head is None and bool(tree.files),
            adopt=self.options.adopt,
        )
        if standing.kind == "behind" and t.diverged is not None:
            if self.options.adopt:
                return Standing("whole", f"adopting it (--adopt): {t.diverged}")
            return Standing(
                "refused",
                f"{t.diverged}; nothing is written there (--adopt replaces its tree with "
                f"{self.options.source}'s)",
            )
        if standing.kind == "behind" and t.whole is not None:
            return Standing("whole", t.whole)
        return standing

    def _committed_at(self, head: Head, revision: int, whole: bool) -> float:
        """When the source committed `revision` (Unix time): the lag's start."""
        found = head.commit
        if revision != head.revision and not whole:
            with suppress(TxnFailed, ValueError):
                found = self.carry.records([revision])[0][0]
        try:
            return float(calendar.timegm(time.strptime(found.time, "%Y-%m-%dT%H:%M:%SZ")))
        except ValueError:
            return time.time()

    # -- blocking, retrying, telling ---------------------------------------------------------

    def _block(self) -> None:
        """One blocking query: on a standby's lock key when no target is held, else on the
        source; never longer than the next renewal, retry or soak."""
        now = time.monotonic()
        held = [t for t in self.targets if t.lock.held]
        standby = [t for t in self.targets if not t.lock.held]
        deadlines = [now + self.options.wait]
        deadlines += [now + t.lock.due_in() for t in held]
        deadlines += [t.retry_at for t in self.targets if t.retry_at > now]
        deadlines += [t.wake_at for t in self.targets if t.wake_at is not None]
        if held and standby:
            deadlines.append(now + self.options.lock_ttl / 3)
        interval = self.options.min_interval
        if self.options.gate.reads_fleet:
            interval = max(interval, _FLEET_INTERVAL)
        self.stopper.sleep(max(0.0, self.last_wake + interval - now))
        wait = min(deadlines) - time.monotonic()
        if wait < _SHORTEST_WAIT:
            self.stopper.sleep(max(0.0, wait))
        elif not held:
            standby[0].lock.wait_free(wait)
        else:
            self._block_source(wait)
        self.last_wake = time.monotonic()

    def _block_source(self, wait: float) -> None:
        if self.options.gate.reads_fleet:
            mode = "meta"  # the head, the reports and the halt all live there
        elif self.headless or self.options.mirror_wipe:
            mode = "files"
        else:
            mode = "head"
        if mode != self.mode:
            self.mode, self.index = mode, None
        wait_for = None if self.index is None else wait
        if mode == "head":
            _, index = self.source.get(head_key(self.prefix), index=self.index, wait=wait_for)
        else:
            folder = meta_prefix(self.prefix) if mode == "meta" else self.prefix + "/"
            _, index = self.source.keys(folder, separator="/", index=self.index, wait=wait_for)
        # An index that went backwards (a restored or restarted source) is taken as it is.
        self.index = max(index, 1)

    def _back_off(self, exc: Exception) -> None:
        self.backoff = min(max(self.backoff * 2, 0.5), self.options.max_backoff)
        self.index = None
        self.tell(
            "retry",
            f"{exc}; retrying in {self.backoff:.1f}s",
            level="warning",
            seconds=self.backoff,
        )
        self.stopper.sleep(self.backoff)

    def _retry(self, t: Target, exc: Exception) -> None:
        t.backoff = min(max(t.backoff * 2, 0.5), self.options.max_backoff)
        t.retry_at = time.monotonic() + t.backoff
        t.known = None
        self.metrics.count(t.dc, "retries")
        self.tell(
            "retry",
            f"{t.dc}: {exc}; retrying in {t.backoff:.1f}s",
            level="warning",
            target=t.dc,
            seconds=t.backoff,
        )

    def _account(self) -> None:
        """Count the bytes read and sent since the last count, by datacenter."""
        clients = [self.source, *(t.client for t in self.targets)]
        now = [(c.bytes_received, c.bytes_sent) for c in clients]
        before = self.counted or [(0, 0)] * len(clients)
        self.counted = now
        self.metrics.count_source(now[0][0] - before[0][0])
        for t, (received, sent), (was_received, was_sent) in zip(
            self.targets, now[1:], before[1:], strict=True
        ):
            self.metrics.count(t.dc, "received", received - was_received)
            self.metrics.count(t.dc, "sent", sent - was_sent)

    def _once_code(self) -> int:
        return EXIT_CHANGES if any(t.short for t in self.targets) else 0


def promote(ctx: Context, dc: str) -> Head | None:
    """Make the replica in `dc` a tree of its own: pushes are accepted there again, and a
    replicator no longer writes it (without --adopt). Its head, or None when it was a tree
    of its own already."""
    with _client(ctx, dc) as client:
        head = read.read_head(client, ctx.prefix)
        if head is None:
            raise InvalidInput(
                f"{dc} holds no revision of {ctx.prefix}: there is nothing to promote"
            )
        if head.source is None:
            return None
        try:
            replica.promote(client, ctx.prefix, head)
        except TxnFailed as exc:
            raise ConflictError(
                f"the head in {dc} moved while it was promoted (a replicator committed); "
                "nothing was changed: run it again"
            ) from exc
        return head
