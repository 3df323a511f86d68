"""What one command works with: its settings, its Consul client and its limits."""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fileconsul.config import Settings
from fileconsul.model.records import Author
from fileconsul.model.seal import Trust
from fileconsul.model.signing import SecretKey
from fileconsul.store.client import ConsulClient
from fileconsul.store.commit import Progress, no_progress


def no_notice(text: str) -> None:
    """Where a command's notices go when nobody reads them."""


@dataclass(frozen=True)
class Context:
    settings: Settings
    client: ConsulClient
    #: Seconds to wait for another node's push to finish.
    lock_wait: float = 30.0
    #: Let any Consul server answer reads (never a push's).
    stale: bool = False
    progress: Progress = no_progress
    #: Tells the operator something while the command goes on (an interrupt held, say).
    notify: Callable[[str], None] = no_notice
    #: The keys this node trusts: it applies only what one of them signed (None: unsigned
    #: trees, as they are).
    trust: Trust | None = None
    #: The key a push or rollback signs its commit with.
    signer: SecretKey | None = None

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    @property
    def basepath(self) -> Path:
        return self.settings.basepath

    def author(self, node: str | None) -> Author:
        """Who commits now: the node (`node`, else the agent's name), the user, the time."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return Author(self.client.node_name(node), current_user(), stamp)


def current_user() -> str:
    """$USER, else the OS's name for this process's user."""
    user = os.environ.get("USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
