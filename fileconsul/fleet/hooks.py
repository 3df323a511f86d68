"""Running the operator's commands around an apply: `--check` on the applied tree before it
is kept, `--exec` after changes were applied, `--on-failure` when something failed. All run
through the shell in the basepath, with the same environment and the changes on stdin."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fileconsul.commands.pull import CheckResult

#: Lines of a --check command's output kept for the fleet report.
TAIL_LINES = 10


@dataclass(frozen=True)
class Hooks:
    exec_cmd: str | None = None
    on_failure: str | None = None
    check: str | None = None


def run_hook(
    command: str,
    *,
    basepath: Path,
    prefix: str,
    revision: int | None,
    changes: Sequence[tuple[str, str]],
    error: str | None = None,
) -> int:
    """Run `command` through the shell in the basepath; its exit status. The changes arrive as
    JSON on stdin and, unless it runs for a failure (`error`), in $FILECONSUL_CHANGED and
    $FILECONSUL_REVISION."""
    return _run(command, basepath, prefix, revision, changes, error, capture=False).returncode


def run_check(
    command: str,
    *,
    basepath: Path,
    prefix: str,
    revision: int,
    changes: Sequence[tuple[str, str]],
) -> CheckResult:
    """Run the --check command as run_hook runs --exec, keeping the last lines it prints."""
    completed = _run(command, basepath, prefix, revision, changes, None, capture=True)
    lines = completed.stdout.decode(errors="replace").splitlines()
    return CheckResult(completed.returncode, "\n".join(lines[-TAIL_LINES:]))


def _run(
    command: str,
    basepath: Path,
    prefix: str,
    revision: int | None,
    changes: Sequence[tuple[str, str]],
    error: str | None,
    *,
    capture: bool,
) -> subprocess.CompletedProcess[bytes]:
    """Run `command` through the shell in the basepath, the changes as JSON on its stdin;
    with `capture`, what it prints (stdout and stderr together) is kept rather than shown."""
    body, env = _context(basepath, prefix, revision, changes, error)
    return subprocess.run(
        command,
        shell=True,
        cwd=basepath,
        env=env,
        input=json.dumps(body).encode(),
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        check=False,
    )


def _context(
    basepath: Path,
    prefix: str,
    revision: int | None,
    changes: Sequence[tuple[str, str]],
    error: str | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON a command gets on stdin, and its environment."""
    body = {
        "prefix": prefix,
        "revision": revision,
        "changes": [{"path": path, "change": change} for path, change in changes],
    }
    env = dict(os.environ)
    env["FILECONSUL_PREFIX"] = prefix
    env["FILECONSUL_BASEPATH"] = str(basepath)
    if error is not None:
        env["FILECONSUL_ERROR"] = error
    elif revision is not None:
        env["FILECONSUL_REVISION"] = str(revision)
        env["FILECONSUL_CHANGED"] = "\n".join(path for path, _ in changes)
    return body, env
