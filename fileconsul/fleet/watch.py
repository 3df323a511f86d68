"""`fileconsul watch`: a blocking query on the prefix's one-level listing, and a delivery after
each commit or write by another tool.

It follows Consul's blocking-query rules: the index is never below 1, an index that goes
backwards or an outage starts over from a fresh read, wake-ups are rate-limited, and an
unreachable agent or a refusing ACL is retried with a doubling back-off.
"""

from __future__ import annotations

import random
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any, Literal

from fileconsul.commands.context import Context
from fileconsul.errors import (
    CheckRejected,
    ConsulUnavailable,
    FileconsulError,
    LockHeld,
    PermissionDenied,
)
from fileconsul.fleet import rollout
from fileconsul.fleet.deliver import DeliverOptions, Delivery, Gate, deliver
from fileconsul.fleet.drift import DriftWatch
from fileconsul.fleet.metrics import Metrics
from fileconsul.local import record as records
from fileconsul.model.records import Head
from fileconsul.model.tree import parse_head
from fileconsul.store.layout import head_key, lock_key
from fileconsul.store.lock import wait_for_lock

#: Hears of each event: (event, message, level=..., facts...).
Tell = Callable[..., None]
Level = Literal["info", "warning", "error"]


class Stopped(BaseException):
    """Raised by the signal handler to leave a blocking query; never during an apply."""


class Stopper:
    """SIGTERM and SIGINT stop the watch between applies, never in the middle of one."""

    def __init__(self) -> None:
        self.requested = False
        self._busy = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if not self._busy:
            raise Stopped

    @contextmanager
    def busy(self) -> Iterator[None]:
        """A signal inside waits for the block to end, then stops the watch."""
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
        if self.requested:
            raise Stopped

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Inside a busy block, a stretch a signal may stop at once (waiting for a slot)."""
        was, self._busy = self._busy, False
        try:
            if self.requested:
                raise Stopped
            yield
        finally:
            self._busy = was

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
        if self.requested:
            raise Stopped


@dataclass(frozen=True)
class WatchOptions:
    deliver: DeliverOptions
    random_delay: float = 0.0
    once: bool = False
    #: Longest blocking query: an idle watcher asks Consul once per `wait` seconds.
    wait: float = 300.0
    #: At most this many deliveries in any second: a burst of commits is delivered as it
    #: lands, an index that moves without end does not spin the loop (Consul's advice).
    most_per_second: int = 20
    max_backoff: float = 30.0
    #: At most this many nodes apply a new revision at once, fleet-wide (None: no limit).
    max_parallel: int | None = None
    #: Seconds between scans for drift (0: never), and whether to put drifted files back.
    drift_every: float = 0.0
    heal: bool = False


@dataclass
class _Wake:
    """Where the watch stands: the listing's index it blocks from, and what is to be
    delivered (and whether to look for other tools' writes with it)."""

    index: int | None = None
    pending: bool = True
    others: bool = True
    #: The head read at the wake, handed to the delivery.
    head: Head | None = None
    #: When the last deliveries began (time.monotonic()), the newest last.
    wakes: deque[float] = field(default_factory=deque)
    backoff: float = 0.0
    #: A revision this node's --check rejected: it waits for the next one.
    rejected: int | None = None
    #: The halt this node holds back from: the head and the halt are watched together, so
    #: that a resume wakes it as a commit does.
    held_by: rollout.Halt | None = None
    drift: DriftWatch = field(default_factory=DriftWatch)


def watch(
    ctx: Context,
    options: WatchOptions,
    stopper: Stopper,
    tell: Tell,
    metrics: Metrics | None = None,
) -> int:
    """Deliver what is pending, then every change as it lands, until stopped; `tell` hears
    of every event, `metrics` counts them.

    Every watcher blocks on the one-level listing of `<prefix>/`, whose index moves with any
    write under the prefix (a commit's files, another tool's `consul kv put`) and with
    nothing else (reports, halts and slots live beside the prefix). A wake-up reads the head:
    when nothing was written after it, it is a commit, and costs the watcher the head and
    the values it changed; a write after the head is another tool's (the tree is read whole)
    or a push under way (held by the lock: the watcher waits for its head, never applying
    half of it). An idle watcher asks Consul once per `wait` seconds.

    Returns 0 when stopped by a signal; with `once`, the exit code of the one delivery.
    """
    metrics = metrics or Metrics()
    metrics.holds(records.load(ctx.basepath, ctx.prefix, cache=False).revision)
    wake = _Wake(drift=DriftWatch(options.drift_every, options.heal))
    try:
        while True:
            try:
                if wake.drift.due():
                    wake.drift.scan(ctx, options.deliver, tell, metrics)
                    wake.pending = wake.pending or bool(wake.drift.restore)
                if wake.index is None:
                    # Read the index before delivering, so that a change meanwhile wakes us.
                    wake.index = _listing(ctx)
                if not wake.pending:
                    _block(ctx, options, stopper, wake)
                    metrics.count("wakeups")
                    if not wake.pending:
                        continue
            except (ConsulUnavailable, PermissionDenied) as exc:
                if options.once:
                    raise
                _start_over(wake, _back_off(wake.backoff, options, stopper, tell, exc))
                continue
            code = _deliver(ctx, options, stopper, tell, metrics, wake)
            if code is not None:
                return code
    except Stopped:
        tell("stop", "stopped by a signal, between applies")
        return 0


def _start_over(wake: _Wake, backoff: float) -> None:
    """Anything may have happened meanwhile (the agent may even hold a new, empty store whose
    index is below ours): read afresh, and look at everything."""
    wake.backoff = backoff
    wake.index, wake.head, wake.pending, wake.others = None, None, True, True


def _deliver(
    ctx: Context,
    options: WatchOptions,
    stopper: Stopper,
    tell: Tell,
    metrics: Metrics,
    wake: _Wake,
) -> int | None:
    wake.wakes.append(time.monotonic())
    if options.random_delay > 0:
        delay = random.uniform(0, options.random_delay)
        tell("delay", f"waiting {delay:.2f}s (--random-delay) before applying", seconds=delay)
        stopper.sleep(delay)
    head, wake.head = wake.head, None
    if head is not None:
        metrics.saw_head(head.revision)
    received = ctx.client.bytes_received
    settings = replace(
        options.deliver,
        others=wake.others,
        rejected=wake.rejected,
        drifted=wake.drift.paths,
        restore=wake.drift.restore,
    )
    with stopper.busy():
        delivery = deliver(ctx, settings, head=head, gate=_gate(ctx, options, stopper, tell))
    wake.drift.delivered(settings.restore, delivery, tell, metrics)
    metrics.count("received_bytes", ctx.client.bytes_received - received)
    if isinstance(delivery.error, CheckRejected):
        wake.rejected = delivery.error.revision
    metrics.delivered(delivery)
    tell_delivery(tell, delivery)
    if options.once:
        return delivery.exit_code
    if isinstance(delivery.error, ConsulUnavailable | PermissionDenied):
        _start_over(wake, _back_off(wake.backoff, options, stopper, tell, delivery.error))
        return None
    wake.pending, wake.others = False, False
    wake.held_by = delivery.halt if delivery.outcome and delivery.outcome.held else None
    return None


def _gate(ctx: Context, options: WatchOptions, stopper: Stopper, tell: Tell) -> Gate | None:
    """With --max-parallel, one of the fleet's slots, held while a change is applied (its
    check and hook included); waiting for it, a signal stops the watch at once."""
    limit = options.max_parallel
    if limit is None:
        return None

    @contextmanager
    def slot() -> Iterator[None]:
        node = ctx.client.node_name(options.deliver.node)
        tell("slot", f"waiting for one of {limit} slots to apply")
        with ExitStack() as held:
            with stopper.interruptible():
                held.enter_context(rollout.slot(ctx.client, ctx.prefix, limit, node))
            yield

    return slot


def tell_delivery(tell: Tell, delivery: Delivery) -> None:
    """The events of one delivery: apply, check, hook, halt, warnings, errors."""
    _tell_outcome(tell, delivery)
    _tell_commands(tell, delivery)
    revision = delivery.revision
    if delivery.halted_here and delivery.halt is not None:
        reason = delivery.halt.reason
        tell("halt", f"halted the rollout of r{revision}: {reason}", level="warning")
    for note in delivery.notes:
        tell("warning", note, level="warning", revision=revision)
    if delivery.error is not None:
        code = delivery.error.exit_code
        tell("error", str(delivery.error), level="error", revision=revision, exit=code)


def _tell_outcome(tell: Tell, delivery: Delivery) -> None:
    outcome = delivery.outcome
    if outcome is None:
        return
    revision = outcome.revision
    for warning in outcome.warnings:
        tell("warning", warning, level="warning", revision=revision)
    for path, why in outcome.skipped:
        tell("skipped", f"skipped {path!r}: {why}", level="warning", path=path)
    if outcome.held:
        tell("held", outcome.held, level="warning", revision=revision)
    elif delivery.changed:
        paths = [a.path for a in outcome.actions]
        more = f" and {len(paths) - 5} more" if len(paths) > 5 else ""
        shown = ", ".join(paths[:5]) + more
        tell("apply", f"applied r{revision}: {shown}", revision=revision, paths=paths)


def _tell_commands(tell: Tell, delivery: Delivery) -> None:
    revision = delivery.revision
    check = delivery.check
    if check is not None:
        level: Level = "info" if check.exit == 0 else "warning"
        message = f"--check exited {check.exit}"
        tell("check", message, level=level, revision=revision, exit=check.exit, output=check.tail)
    result = delivery.hook_result
    if delivery.hook is not None and result is not None:
        level = "info" if result.exit == 0 else "warning"
        message = f"--exec exited {result.exit}: {delivery.hook}"
        tell(
            "hook",
            message,
            level=level,
            revision=revision,
            command=delivery.hook,
            exit=result.exit,
            output=result.tail,
        )


def _listing(ctx: Context) -> int:
    """The index of the prefix's one-level listing: the last write under the prefix."""
    _, index = ctx.client.keys(ctx.prefix + "/", separator="/", stale=ctx.stale)
    return max(index, 1)


def _block(ctx: Context, options: WatchOptions, stopper: Stopper, wake: _Wake) -> None:
    """One blocking query on the listing; what it found is marked pending."""
    if wake.held_by is not None:
        _block_halted(ctx, options, stopper, wake)
        return
    index = wake.index or 1
    wait = wake.drift.wait(options.wait)  # a scan for drift may be due first
    _, new_index = ctx.client.keys(
        ctx.prefix + "/", separator="/", index=index, wait=wait, stale=ctx.stale
    )
    wake.backoff = 0.0
    if new_index == index:
        return  # the wait ended with nothing new: an idle watcher asks again
    # An index that went backwards (a restarted or restored cluster) is taken as it is: it is
    # never below 1, and the delivery reads afresh.
    wake.index, wake.pending = max(new_index, 1), True
    _rate_limit(options, stopper, wake)
    wake.head, wake.others = _after(ctx, options, new_index)


def _block_halted(ctx: Context, options: WatchOptions, stopper: Stopper, wake: _Wake) -> None:
    """Held back by a halt, nothing under the prefix can be applied until a commit moves the
    head or the halt is lifted: one blocking query on the head and the halt together, so
    that a resume wakes the watcher as a commit does."""
    assert wake.held_by is not None
    found = rollout.still_halted(ctx.client, ctx.prefix, wake.held_by, stale=ctx.stale)
    if found is not None:
        wait = wake.drift.wait(options.wait)
        moved = rollout.wait_on_halt(ctx.client, ctx.prefix, found, wait, stale=ctx.stale)
        wake.backoff = 0.0
        if moved == found:
            return
    # Lifted, replaced, or a commit: read afresh from the listing, and look at everything.
    wake.held_by, wake.index, wake.head, wake.pending, wake.others = None, None, None, True, True
    _rate_limit(options, stopper, wake)


def _rate_limit(options: WatchOptions, stopper: Stopper, wake: _Wake) -> None:
    """Sleep until a delivery now keeps to `most_per_second` over the last second."""
    while len(wake.wakes) > options.most_per_second:
        wake.wakes.popleft()
    if len(wake.wakes) == options.most_per_second:
        stopper.sleep(max(0.0, wake.wakes[0] + 1.0 - time.monotonic()))


def _after(ctx: Context, options: WatchOptions, listing: int) -> tuple[Head | None, bool]:
    """What a write under the prefix at index `listing` was: (the head to deliver, whether to
    look for other tools' writes). A commit moves the head with its files, or after them; a
    head behind the listing is asked of the leader, and then a push holding the lock is
    waited for (never applied half: it lands, or it dies and its values are ignored), and
    anything else is another tool's write."""
    head = _head(ctx, stale=ctx.stale)
    if head is not None and listing <= head.index:
        return head, False
    head = _head(ctx, stale=False)
    if head is not None and listing <= head.index:
        return head, False
    with suppress(LockHeld):
        wait_for_lock(ctx.client, lock_key(ctx.prefix), time.monotonic() + options.wait)
        head = _head(ctx, stale=False)
        if head is not None and listing <= head.index:
            return head, False
    return None, True


def _head(ctx: Context, *, stale: bool) -> Head | None:
    """The head, or None when there is none (or it does not parse: the delivery reports it)."""
    entry, _ = ctx.client.get(head_key(ctx.prefix), stale=stale)
    if entry is None:
        return None
    try:
        return parse_head(entry)
    except FileconsulError:
        return None


def _back_off(
    backoff: float, options: WatchOptions, stopper: Stopper, tell: Tell, exc: Exception
) -> float:
    """Sleep a doubling delay, capped, while Consul is unreachable or refuses; the new delay."""
    backoff = min(max(backoff * 2, 0.5), options.max_backoff)
    tell("retry", f"{exc}; retrying in {backoff:.1f}s", level="warning", seconds=backoff)
    stopper.sleep(backoff)
    return backoff
