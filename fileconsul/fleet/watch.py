"""`fileconsul watch`: a blocking query on the head, and a delivery after each commit.

It follows Consul's blocking-query rules: the index is never below 1, an index that goes
backwards or an outage starts over from a fresh read, wake-ups are rate-limited, and an
unreachable agent or a refusing ACL is retried with a doubling back-off.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any, Literal

from fileconsul.commands.context import Context
from fileconsul.errors import CheckRejected, ConsulUnavailable, FileconsulError, PermissionDenied
from fileconsul.fleet import rollout
from fileconsul.fleet.deliver import DeliverOptions, Delivery, deliver
from fileconsul.fleet.metrics import Metrics
from fileconsul.local import record as records
from fileconsul.model.records import Head
from fileconsul.model.tree import parse_head
from fileconsul.store.layout import head_key

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
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
        if self.requested:
            raise Stopped

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
    #: Longest blocking query; also how often writes by other tools are looked for.
    wait: float = 300.0
    min_interval: float = 0.05
    max_backoff: float = 30.0
    #: At most this many nodes apply a new revision at once, fleet-wide (None: no limit).
    max_parallel: int | None = None


@dataclass
class _Wake:
    """Where the watch stands: the head's index it last saw, and whether something is to be
    delivered (and whether to look for other tools' writes with it)."""

    index: int | None = None
    #: The tree has no head yet: its listing is watched instead.
    headless: bool = False
    pending: bool = True
    others: bool = True
    #: When other tools' writes were last looked for (time.monotonic()).
    looked: float = 0.0
    #: The head the last blocking query returned, handed to the delivery.
    head: Head | None = None
    last_wake: float = 0.0
    backoff: float = 0.0
    #: A revision this node's --check rejected: it waits for the next one.
    rejected: int | None = None
    #: The revision this node holds.
    holds: int = 0


def watch(
    ctx: Context,
    options: WatchOptions,
    stopper: Stopper,
    tell: Tell,
    metrics: Metrics | None = None,
) -> int:
    """Deliver what is pending, then every commit as it lands, until stopped; `tell` hears of
    every event, `metrics` counts them.

    Every watcher blocks on the head, one small key that only a commit moves: a commit costs
    each watcher that key and the values it changed, whatever the tree's size. Writes by
    other tools under the prefix move no head: they are looked for at start, then whenever a
    blocking query ends with nothing new (every `wait` seconds at the most), and with them
    before the next commit. A tree without a head yet (empty, or of the first format) is
    watched through its listing instead.

    Returns 0 when stopped by a signal; with `once`, the exit code of the one delivery.
    """
    metrics = metrics or Metrics()
    wake = _Wake(holds=records.load(ctx.basepath, ctx.prefix).revision)
    try:
        while True:
            try:
                if not wake.pending:
                    _block(ctx, options, stopper, wake)
                    metrics.count("wakeups")
                    if not wake.pending:
                        continue
                elif wake.index is None:
                    # Read the index before delivering, so that a commit meanwhile wakes us.
                    _index(ctx, wake)
            except (ConsulUnavailable, PermissionDenied) as exc:
                if options.once:
                    raise
                wake.backoff = _back_off(wake.backoff, options, stopper, tell, exc)
                # Anything may have happened meanwhile, the agent may even hold a new, empty
                # store whose index is below ours: start over from a fresh read, and look.
                wake.index, wake.head, wake.pending, wake.others = None, None, True, True
                continue
            code = _deliver(ctx, options, stopper, tell, metrics, wake)
            if code is not None:
                return code
    except Stopped:
        tell("stop", "stopped by a signal, between applies")
        return 0


def _deliver(
    ctx: Context,
    options: WatchOptions,
    stopper: Stopper,
    tell: Tell,
    metrics: Metrics,
    wake: _Wake,
) -> int | None:
    wake.last_wake = time.monotonic()
    if options.random_delay > 0:
        delay = random.uniform(0, options.random_delay)
        tell("delay", f"waiting {delay:.2f}s (--random-delay) before applying", seconds=delay)
        stopper.sleep(delay)
    head, wake.head = wake.head, None
    if head is not None:
        metrics.saw_head(head.revision)
    received = ctx.client.bytes_received
    settings = replace(options.deliver, others=wake.others, rejected=wake.rejected)
    with stopper.busy(), _slot(ctx, options, head, wake, tell):
        delivery = deliver(ctx, settings, head=head)
    metrics.count("received_bytes", ctx.client.bytes_received - received)
    if wake.others:
        wake.looked = wake.last_wake
    if isinstance(delivery.error, CheckRejected):
        wake.rejected = delivery.error.revision
    metrics.delivered(delivery)
    tell_delivery(tell, delivery)
    if delivery.outcome is not None and not delivery.outcome.held:
        wake.holds = delivery.outcome.revision
    if options.once:
        return delivery.exit_code
    if isinstance(delivery.error, ConsulUnavailable | PermissionDenied):
        wake.backoff = _back_off(wake.backoff, options, stopper, tell, delivery.error)
        wake.index, wake.head, wake.others = None, None, True
        return None
    wake.pending, wake.others = False, False
    outcome = delivery.outcome
    if outcome is not None and outcome.head_index and not wake.headless:
        # The head delivered: a commit that landed meanwhile has a higher index, and wakes us.
        wake.index = outcome.head_index
    elif outcome is None or outcome.head_index:
        wake.index = None  # read it again before blocking
    return None


@contextmanager
def _slot(
    ctx: Context, options: WatchOptions, head: Head | None, wake: _Wake, tell: Tell
) -> Iterator[None]:
    """With --max-parallel, hold a slot while a new revision is applied (its check and hook
    included); a wake-up with no new revision needs none."""
    fresh = head is None or head.revision not in (wake.holds, wake.rejected)
    if options.max_parallel is None or not fresh:
        yield
        return
    node = ctx.client.node_name(options.deliver.node)
    tell("slot", f"waiting for one of {options.max_parallel} slots to apply")
    with rollout.slot(ctx.client, ctx.prefix, options.max_parallel, node):
        yield


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
    if delivery.hook is not None:
        level = "info" if delivery.hook_exit == 0 else "warning"
        message = f"--exec exited {delivery.hook_exit}: {delivery.hook}"
        tell("hook", message, level=level, revision=revision, exit=delivery.hook_exit)


def _index(ctx: Context, wake: _Wake) -> None:
    """The index to block from: the head's, or the listing's for a tree without a head."""
    entry, index = ctx.client.get(head_key(ctx.prefix), stale=ctx.stale)
    wake.headless = entry is None
    if wake.headless:
        _, index = ctx.client.keys(ctx.prefix + "/", separator="/", stale=ctx.stale)
    wake.index = max(index, 1)


def _block(ctx: Context, options: WatchOptions, stopper: Stopper, wake: _Wake) -> None:
    """One blocking query; marks what it found as pending."""
    if wake.index is None:
        _index(ctx, wake)
    index = wake.index or 1
    if wake.headless:
        _, new_index = ctx.client.keys(
            ctx.prefix + "/", separator="/", index=index, wait=options.wait, stale=ctx.stale
        )
        wake.others = True
    else:
        entry, new_index = ctx.client.get(
            head_key(ctx.prefix), index=index, wait=options.wait, stale=ctx.stale
        )
        if entry is None:  # the head was deleted: the tree is gone, or started over
            wake.index, wake.pending, wake.others = None, True, True
            return
        with suppress(FileconsulError):  # a head that does not parse is the delivery's to report
            wake.head = parse_head(entry)
    wake.backoff = 0.0
    if new_index != index:
        # An index that went backwards (a restarted or restored cluster) is taken as it is:
        # it is never below 1, and the delivery reads afresh.
        wake.index, wake.pending = max(new_index, 1), True
        stopper.sleep(max(0.0, wake.last_wake + options.min_interval - time.monotonic()))
    else:
        wake.head = None  # nothing new: the next delivery reads the head itself
        if time.monotonic() - wake.looked >= options.wait:
            wake.pending = wake.others = True


def _back_off(
    backoff: float, options: WatchOptions, stopper: Stopper, tell: Tell, exc: Exception
) -> float:
    """Sleep a doubling delay, capped, while Consul is unreachable or refuses; the new delay."""
    backoff = min(max(backoff * 2, 0.5), options.max_backoff)
    tell("retry", f"{exc}; retrying in {backoff:.1f}s", level="warning", seconds=backoff)
    stopper.sleep(backoff)
    return backoff
