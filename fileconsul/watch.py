"""`fileconsul watch`: a blocking query on the prefix, and a delivery after each change.

It follows Consul's blocking-query rules: the index is never below 1, an index that goes
backwards or an outage starts over from a fresh read, wake-ups are rate-limited, and an
unreachable agent or a refusing ACL is retried with a doubling back-off.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from fileconsul.deliver import DeliverOptions, Delivery, deliver
from fileconsul.errors import ConsulUnavailable, PermissionDenied
from fileconsul.run import Run

Log = Callable[[str], None]


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
    wait: float = 300.0
    min_interval: float = 0.05
    max_backoff: float = 30.0


def watch(
    run: Run,
    options: WatchOptions,
    stopper: Stopper,
    on_delivery: Callable[[Delivery], object],
    log: Log,
) -> int:
    """Deliver what is pending, then every change under the prefix, until stopped.

    Returns 0 when stopped by a signal; with `once`, the exit code of the one delivery.
    """
    index: int | None = None
    pending = True
    backoff = 0.0
    last_wake = 0.0
    try:
        while True:
            try:
                if index is None:
                    # Read the index before applying, so a change during the apply wakes us.
                    index = max(run.client.keys(run.prefix + "/", stale=run.stale)[1], 1)
                if not pending:
                    _, new_index = run.client.keys(
                        run.prefix + "/", index=index, wait=options.wait, stale=run.stale
                    )
                    backoff = 0.0
                    if new_index == index:
                        continue
                    # An index that went backwards (a restarted or restored cluster) is taken
                    # as it is: it is never below 1, and the delivery below reads afresh.
                    index, pending = max(new_index, 1), True
                    stopper.sleep(max(0.0, last_wake + options.min_interval - time.monotonic()))
            except (ConsulUnavailable, PermissionDenied) as exc:
                backoff = _back_off(backoff, options, stopper, log, exc)
                # Anything may have happened meanwhile, the agent may even hold a new, empty
                # store whose index is below ours: start over from a fresh index and apply.
                index, pending = None, True
                continue
            last_wake = time.monotonic()
            if options.random_delay > 0:
                stopper.sleep(random.uniform(0, options.random_delay))
            with stopper.busy():
                delivery = deliver(run, options.deliver)
            on_delivery(delivery)
            if options.once:
                return delivery.exit_code
            if isinstance(delivery.error, ConsulUnavailable | PermissionDenied):
                backoff = _back_off(backoff, options, stopper, log, delivery.error)
                continue
            pending = False
    except Stopped:
        return 0


def _back_off(
    backoff: float, options: WatchOptions, stopper: Stopper, log: Log, exc: Exception
) -> float:
    """Sleep a doubling delay, capped, while Consul is unreachable or refuses; the new delay."""
    backoff = min(max(backoff * 2, 0.5), options.max_backoff)
    log(f"{exc}; retrying in {backoff:.1f}s")
    stopper.sleep(backoff)
    return backoff
