"""Generic helpers for sending work in batches: packing items into groups under a count and a
weight limit, running work with a few items in flight at once, and handing work to a thread
pool so that an interrupt never leaves a worker the pool does not know of."""

from __future__ import annotations

import signal
import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any, TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


def batches(
    items: Sequence[_T], weight: Callable[[_T], int], *, count: int, total: int
) -> list[list[_T]]:
    """Consecutive groups of at most `count` items whose weights add up to at most `total`
    (an item heavier than `total` goes alone)."""
    groups: list[list[_T]] = []
    current: list[_T] = []
    size = 0
    for item in items:
        cost = weight(item)
        if current and (len(current) >= count or size + cost > total):
            groups.append(current)
            current, size = [], 0
        current.append(item)
        size += cost
    return groups + ([current] if current else [])


def in_flight(
    work: Callable[[_T], _R], items: Sequence[_T], *, depth: int, name: str
) -> Generator[_R]:
    """`work(item)` for each item, results in order, up to `depth` of them running at once.
    Closing the generator early cancels what has not started. A single item runs here: a
    thread would only cost its start (what most deliveries carry is one batch)."""
    if len(items) == 1:
        yield work(items[0])
        return
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix=name) as pool:
        pending: deque[Future[_R]] = deque()
        try:
            for item in items:
                pending.append(submit(pool, work, item))
                if len(pending) >= depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def submit(pool: ThreadPoolExecutor, work: Callable[..., _R], *args: Any) -> Future[_R]:
    """`pool.submit(work, *args)`, with SIGINT and SIGTERM held until it returns. A Ctrl-C
    landing inside `submit`, after the pool started a thread and before it noted it, leaves a
    worker that the pool's shutdown does not join, and that goes on after the command cleaned
    up; held, the signal is raised again at once after."""
    if threading.current_thread() is not threading.main_thread():
        return pool.submit(work, *args)
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return pool.submit(work, *args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in held:
            signal.raise_signal(signum)
