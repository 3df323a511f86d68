"""Background fileconsul and consul processes for the watch tests, stopped by their PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import Node


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


class Background:
    """A process whose output goes to a file, so a test can read it while it runs."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - read while the process runs
            prefix="fileconsul-bg-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            args,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.process.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> int:
        """SIGTERM the process (and then its group), by PID; its exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        self.log.close()
        code = self.process.returncode
        Path(self.log.name).unlink(missing_ok=True)
        return code


def fileconsul_args(node: Node, command: str, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "fileconsul", command, "--addr", node.addr, "--prefix"]
    args += [node.prefix, "--basepath", str(node.root)]
    if node.token:
        args += ["--token", node.token]
    return [*args, *extra]


@contextmanager
def background(args: list[str], env: dict[str, str] | None = None) -> Iterator[Background]:
    proc = Background(args, env)
    try:
        yield proc
    except BaseException:
        print(f"--- output of {args[:5]}:\n{proc.output()}", file=sys.stderr)
        raise
    finally:
        proc.stop()


def with_fault(
    node: Node, fault: str, command: str, *extra: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a fileconsul command of `node` with a fault injected (see tests/fault.py)."""
    args = fileconsul_args(node, command, *extra)
    args[1:3] = ["-m", "tests.fault"]
    env = {**os.environ, "FILECONSUL_TEST_FAULT": fault}
    return subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
