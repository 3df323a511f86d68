"""Background fileconsul and consul processes for the watch tests, stopped by their PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import KV, Node


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
    node: Node,
    fault: str,
    command: str,
    *extra: str,
    timeout: float = 120,
    end_sessions: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a fileconsul command of `node` with a fault injected (see tests/fault.py). After a
    kill, the push lock's session it left is ended, as its TTL would end it (unless the wait
    for the TTL is what is tested: `end_sessions=False`)."""
    args = fileconsul_args(node, command, *extra)
    args[1:3] = ["-m", "tests.fault"]
    env = {**os.environ, "FILECONSUL_TEST_FAULT": fault}
    done = subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if done.returncode == -signal.SIGKILL and end_sessions:
        KV(f"http://{node.addr}", node.token).end_sessions(f"fileconsul push {node.prefix}")
    return done


class RecordingProxy:
    """A TCP proxy in front of an agent that keeps the request line of every HTTP request
    passing through it: what a fileconsul process really sends."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.lines: list[str] = []
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.addr = f"127.0.0.1:{self._server.getsockname()[1]}"
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for source, sink, record in ((client, upstream, True), (upstream, client, False)):
                thread = threading.Thread(
                    target=self._pipe, args=(source, sink, record), daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _pipe(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    self.lines += [
                        line.decode(errors="replace")
                        for line in data.split(b"\r\n")
                        if line.startswith((b"GET ", b"PUT ", b"DELETE "))
                    ]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        # A listening socket's shutdown wakes the thread blocked in accept(); close alone would not.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._accepting.join()
        for end in self._sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)
        for end in self._sockets:
            end.close()
