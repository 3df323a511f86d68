"""What one command works with: its settings, its Consul client and its limits."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from fileconsul.config import Settings
from fileconsul.consul import ConsulClient

#: Advances a progress display by a count of items done.
Step = Callable[[int], None]
#: Makes a progress display for (label, total items); yields its step function.
Progress = Callable[[str, int], AbstractContextManager[Step]]


def no_progress(label: str, total: int) -> AbstractContextManager[Step]:
    return nullcontext(lambda count: None)


def no_notice(text: str) -> None:
    """Where a command's notices go when nobody reads them."""


@dataclass(frozen=True)
class Run:
    settings: Settings
    client: ConsulClient
    #: Seconds to wait for another node's push to finish.
    lock_wait: float = 30.0
    #: Let any Consul server answer reads (never a push's).
    stale: bool = False
    progress: Progress = no_progress
    #: Tells the operator something while the command goes on (an interrupt held, say).
    notify: Callable[[str], None] = no_notice

    @property
    def prefix(self) -> str:
        return self.settings.prefix
