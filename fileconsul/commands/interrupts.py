"""Ctrl-C (SIGINT) and SIGTERM around the moments a command must not stop in: a pull renaming
its files into place, a push sending what its commit needs.

Outside such a moment a signal stops the command at once (KeyboardInterrupt, exit 130), and
what it staged is discarded. Inside one it is held: the moment finishes, then the command
stops (`critical`), or, for a push, the first signal only says that the push will finish and a
second one stops it (`finishing`). Where another part of the program already handles these
signals (the watch loop, which stops between applies), nothing is installed here.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from fileconsul.errors import Interrupted

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _ours_to_handle(signum: int) -> bool:
    """Whether the signal is left to Python's defaults (so that handling it here is ours)."""
    current = signal.getsignal(signum)
    return current in (signal.default_int_handler, signal.SIG_DFL)


@contextmanager
def _held(on_signal: Callable[[int], None]) -> Iterator[list[int]]:
    """Calls `on_signal` for each SIGINT or SIGTERM inside; yields the list of those held."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    mine = [sig for sig in _SIGNALS if _ours_to_handle(sig)]
    held: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        held.append(signum)
        on_signal(signum)

    previous: dict[int, Any] = {sig: signal.signal(sig, handle) for sig in mine}
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def critical(after: str) -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends; then stop with Interrupted(`after`),
    which says what was done."""
    with _held(lambda signum: None) as held:
        yield
    if held:
        raise Interrupted(after)


@contextmanager
def finishing(notice: Callable[[str], None], what: str) -> Iterator[list[int]]:
    """The first SIGINT or SIGTERM inside only says that `what` will finish (through
    `notice`); a second one stops it at once (KeyboardInterrupt). Yields the signals held."""

    def on_signal(signum: int) -> None:
        if len(held) > 1:
            raise KeyboardInterrupt
        notice(f"finishing {what} (interrupt again to stop it and undo what it sent)")

    with _held(on_signal) as held:
        yield held
