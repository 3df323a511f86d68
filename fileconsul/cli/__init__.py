"""The command line: click commands that build settings, run the library and render results.
Only this package prints; the library raises errors that carry their exit codes."""

from __future__ import annotations

import sys

from fileconsul.cli import (
    history_commands,
    key_commands,
    replicate_command,
    rollout_commands,
    sync_commands,
    ui_command,
    watch_command,
)
from fileconsul.cli.base import cli

__all__ = [
    "cli",
    "history_commands",
    "key_commands",
    "main",
    "replicate_command",
    "rollout_commands",
    "sync_commands",
    "ui_command",
    "watch_command",
]


def main() -> None:
    sys.exit(cli.main(prog_name="fileconsul"))
