"""Running the operator's commands around an apply: `--check` on the applied tree before it
is kept, `--exec` after changes were applied, `--on-failure` when something failed. All run
through the shell in the basepath, with the same environment and the changes on stdin.

What a command prints is streamed as it comes (to the stream the caller names, or nowhere)
and only its last lines are kept, so memory stays flat whatever it prints; a command that
outlives its timeout is killed with its whole process group and counts as failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fileconsul.commands.pull import CheckResult

#: Seconds a hook may run before it is killed, unless --hook-timeout says otherwise.
DEFAULT_TIMEOUT = 300.0
#: Lines of a command's output kept, each cut to LINE_CHARS characters: what the fleet
#: report, the halt and the log carry.
TAIL_LINES = 10
LINE_CHARS = 300
#: The exit status of a command killed at its timeout (as timeout(1) reports it).
TIMED_OUT = 124
#: Bytes of output kept while a command runs, from which the tail is cut.
_KEEP_BYTES = 64 * 1024


@dataclass(frozen=True)
class Hooks:
    exec_cmd: str | None = None
    on_failure: str | None = None
    check: str | None = None
    #: Seconds each command may run before it is killed (a failure, exit 124).
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Call:
    """What a command is told: its working directory, the prefix, the revision and changes,
    and, when it runs for a failure, why."""

    basepath: Path
    prefix: str
    revision: int | None
    changes: Sequence[tuple[str, str]]
    error: str | None = None


def run(command: str, call: Call, *, timeout: float, echo: IO[bytes] | None = None) -> CheckResult:
    """Run `command` through the shell in the basepath, the changes as JSON on its stdin (and,
    unless it runs for a failure, in $FILECONSUL_CHANGED and $FILECONSUL_REVISION). What it
    prints (stdout and stderr together) goes to `echo` as it comes; its exit status and last
    lines are returned. Past `timeout` seconds its process group is killed: exit 124."""
    body, env = _context(call)
    process = subprocess.Popen(
        command,
        shell=True,
        cwd=call.basepath,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    feeding = threading.Thread(
        target=_feed, args=(process.stdin, json.dumps(body).encode()), name="fileconsul-hook"
    )
    feeding.start()
    try:
        kept, timed_out = _drain(process, process.stdout, time.monotonic() + timeout, echo)
    finally:
        if process.poll() is None:
            _kill_group(process)
        process.stdout.close()
        feeding.join()
    code = TIMED_OUT if timed_out else process.wait()
    lines = tail(kept.decode(errors="replace"))
    if timed_out:
        lines = "\n".join([*lines.splitlines(), f"(killed after {timeout:g}s)"][-TAIL_LINES:])
    return CheckResult(code, lines)


def tail(text: str, lines: int = TAIL_LINES, chars: int = LINE_CHARS) -> str:
    """The last `lines` lines of `text`, each cut to `chars` characters: small enough for any
    Consul value, whatever was printed."""
    kept = text.splitlines()[-lines:]
    return "\n".join(line if len(line) <= chars else line[: chars - 1] + "…" for line in kept)


def _feed(stdin: IO[bytes], body: bytes) -> None:
    """Write the JSON to the command's stdin (a command that does not read it is fine)."""
    try:
        stdin.write(body)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def _drain(
    process: subprocess.Popen[bytes], out: IO[bytes], deadline: float, echo: IO[bytes] | None
) -> tuple[bytes, bool]:
    """Read what the command prints until it closes its output (or exits, leaving it open to
    a process it started) or the deadline passes: the last bytes of it, and whether the
    deadline passed."""
    kept = bytearray()
    fd = out.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(kept), True
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if not ready:
            if process.poll() is not None:
                return bytes(kept), False
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return bytes(kept), False
        if echo is not None:
            echo.write(chunk)
            echo.flush()
        kept += chunk
        if len(kept) > _KEEP_BYTES:
            del kept[: len(kept) - _KEEP_BYTES]


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the command and every process it started (its session's group), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _context(call: Call) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON a command gets on stdin, and its environment."""
    body = {
        "prefix": call.prefix,
        "revision": call.revision,
        "changes": [{"path": path, "change": change} for path, change in call.changes],
    }
    env = dict(os.environ)
    env["FILECONSUL_PREFIX"] = call.prefix
    env["FILECONSUL_BASEPATH"] = str(call.basepath)
    if call.error is not None:
        env["FILECONSUL_ERROR"] = call.error
    elif call.revision is not None:
        env["FILECONSUL_REVISION"] = str(call.revision)
        env["FILECONSUL_CHANGED"] = "\n".join(path for path, _ in call.changes)
    return body, env
