"""The fleet case: what one push costs the Consul servers per watching node.

N `fileconsul watch` processes hold a tree on one agent; a one-file push is repeated; the
agent's own CPU time and the bytes it writes (from /proc/<pid>, read once every watcher holds
the change and its fleet report has landed) are divided by N and by the pushes. The design
before revisions (the last commit of the first format, from this repository's history) runs
in the same run as the baseline, when git can give it.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
#: The last commit of the first format: watchers that block on the whole prefix and read the
#: manifest on every change.
BASELINE_COMMIT = "de9e2fa"
#: The last commit before a delivery read only what it changes: watchers that block on the
#: head, and scan the whole tree and rewrite the whole record on each delivery.
WHOLE_TREE_COMMIT = "7345f13"
FILE_SIZE = 4096
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Usage:
    cpu: float
    written: int
    at: float


def usage(pid: int) -> Usage:
    """The CPU seconds a process used and the bytes it wrote (sockets included), and when."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/io") as handle:
        written = next(int(line.split()[1]) for line in handle if line.startswith("wchar"))
    return Usage((int(fields[11]) + int(fields[12])) / _TICK, written, time.monotonic())


def idle_rate(pid: int, seconds: float = 10.0) -> float:
    """The CPU seconds per second the agent spends on its own, with no client."""
    before = usage(pid)
    time.sleep(seconds)
    after = usage(pid)
    return (after.cpu - before.cpu) / (after.at - before.at)


def baseline_code(work: Path, commit: str = BASELINE_COMMIT) -> Path | None:
    """The fileconsul package of `commit` (by default the first format's), unpacked from git;
    None when git cannot say."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "fileconsul"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    target = work / f"baseline-{commit}"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def make_tree(root: Path, count: int) -> None:
    for i in range(count):
        path = root / f"a{i % 10}" / f"b{i // 10 % 10}" / f"c{i // 100 % 10}" / f"f{i:05}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(FILE_SIZE))


@dataclass
class Design:
    name: str
    #: PYTHONPATH that makes `python -m fileconsul` this design ("" for the checkout's).
    path: str
    #: The key a commit of this design writes last: it says when the commit landed.
    commit_key: str

    def args(self, command: str, addr: str, prefix: str, root: Path, *extra: str) -> list[str]:
        # An editable install's finder answers for `fileconsul` before PYTHONPATH is searched,
        # and `-c` puts the working directory first: both are dropped, so that the package on
        # PYTHONPATH is the one that runs.
        launch = (
            "import runpy, sys; "
            "sys.path[:] = [p for p in sys.path if p]; "
            "sys.meta_path[:] = [f for f in sys.meta_path "
            "if not str(getattr(f, '__module__', '')).startswith('__editable__')]; "
            "runpy.run_module('fileconsul', run_name='__main__')"
        )
        args = [sys.executable, "-c", launch, command, "--addr", addr]
        return [*args, "--prefix", prefix, "--basepath", str(root), *extra]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = self.path or str(ROOT)
        return env

    def run(self, *args: str) -> None:
        subprocess.run(list(args), env=self.env(), check=True, capture_output=True)

    def check(self) -> None:
        """That `python -m fileconsul` of this design is the code it says it is."""
        code = "import fileconsul, sys; print(fileconsul.__file__)"
        args = self.args("status", "", "", Path("."))
        launch = args[2].replace("runpy.run_module('fileconsul', run_name='__main__')", code)
        where = subprocess.run(
            [sys.executable, "-c", launch], env=self.env(), capture_output=True, text=True
        ).stdout.strip()
        expected = str(Path(self.path or ROOT) / "fileconsul")
        if not where.startswith(expected):
            raise RuntimeError(f"{self.name} runs {where}, not {expected}")


@contextmanager
def watchers(design: Design, addr: str, prefix: str, roots: list[Path]) -> Iterator[None]:
    procs = [
        subprocess.Popen(
            design.args("watch", addr, prefix, root, "--node", root.name, "-q"),
            env=design.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for root in roots
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(poll)


def one_design(
    design: Design,
    agent_url: str,
    agent_pid: int,
    work: Path,
    files: int,
    count: int,
    pushes: int,
    idle_seconds: float,
) -> dict[str, Any]:
    addr = agent_url.removeprefix("http://")
    prefix = f"fleet-{design.name.split()[0]}-{files}-{count}-{time.monotonic_ns()}"
    src = work / f"{prefix}-src"
    make_tree(src, files)
    design.run(*design.args("push", addr, prefix, src, "--no-report"))
    roots = [work / f"{prefix}-node{i:02}" for i in range(count)]
    for root in roots:
        root.mkdir()
    http = httpx.Client(base_url=agent_url, timeout=60)
    changed = src / "a1" / "b0" / "c0" / "f00001.bin"
    converged: list[float] = []
    try:
        with watchers(design, addr, prefix, roots):
            wait_for(lambda: all((r / "a1/b0/c0/f00001.bin").exists() for r in roots), 900)
            time.sleep(2)  # the initial pulls' reports land, the agent settles
            # What the agent spends on its own is measured here, holding this tree and these
            # watchers' blocking queries, and is not counted as the pushes' or the watchers'.
            idle_rate_now = idle_rate(agent_pid, idle_seconds)
            before = usage(agent_pid)
            key = design.commit_key.format(prefix=prefix)
            for _ in range(pushes):
                content = os.urandom(FILE_SIZE)
                changed.write_bytes(content)
                index = int(http.get(f"/v1/kv/{key}").headers["X-Consul-Index"])
                push = subprocess.Popen(
                    design.args("push", addr, prefix, src, "--no-report"),
                    env=design.env(),
                    stdout=subprocess.DEVNULL,
                )
                # A blocking query on the key the commit writes last returns when it lands.
                http.get(f"/v1/kv/{key}", params={"index": index, "wait": "60s"})
                converged += _arrivals(roots, content, time.monotonic())
                if push.wait(timeout=120) != 0:
                    raise RuntimeError(f"the push of {design.name} failed")
                time.sleep(0.5)  # the reports of this push land
            after = usage(agent_pid)
    finally:
        # The tree, its history, its lock and reports: every key that starts with the prefix,
        # which is this run's alone, so that the agent holds one tree at a time.
        with suppress(httpx.HTTPError):
            http.delete(f"/v1/kv/{prefix}", params={"recurse": ""})
        http.close()
        for path in [src, *roots]:
            shutil.rmtree(path, ignore_errors=True)
    return {
        "design": design.name,
        "files": files,
        "watchers": count,
        "pushes": pushes,
        "cpu_s": after.cpu - before.cpu - idle_rate_now * (after.at - before.at),
        "idle_cpu_ms_per_s": round(1000 * idle_rate_now, 2),
        "written": after.written - before.written,
        "converged_p50_s": round(statistics.median(converged), 3) if converged else 0.0,
        "converged_max_s": round(max(converged), 3) if converged else 0.0,
    }


def per_watcher(watched: dict[str, Any], alone: dict[str, Any]) -> dict[str, Any]:
    """What the watchers added to the pushes alone, per watcher per push."""
    per = watched["watchers"] * watched["pushes"]
    cpu = watched.pop("cpu_s") - alone["cpu_s"]
    written = watched.pop("written") - alone["written"]
    return {
        **watched,
        "server_cpu_ms_per_watcher_per_push": round(1000 * cpu / per, 2),
        "server_kib_written_per_watcher_per_push": round(written / 1024 / per, 2),
        "push_alone_cpu_ms": round(1000 * alone["cpu_s"] / alone["pushes"], 2),
        "push_alone_kib_written": round(alone["written"] / 1024 / alone["pushes"], 2),
    }


def _arrivals(roots: list[Path], content: bytes, since: float) -> list[float]:
    """Seconds from `since` until each node holds `content`."""
    waiting = {root: root / "a1/b0/c0/f00001.bin" for root in roots}
    arrived: list[float] = []
    deadline = since + 120
    while waiting and time.monotonic() < deadline:
        for root, path in list(waiting.items()):
            with suppress(OSError):
                if path.read_bytes() == content:
                    arrived.append(time.monotonic() - since)
                    del waiting[root]
        time.sleep(0.002)
    if waiting:
        raise RuntimeError(f"{len(waiting)} watchers never got the change")
    return arrived


def fleet(
    agent_url: str,
    agent_pid: int,
    sizes: list[int],
    counts: list[int],
    pushes: int,
    idle_seconds: float = 10.0,
) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="fleet-"))
    try:
        designs = [Design("fileconsul", "", "{prefix}.fileconsul/head")]
        whole = baseline_code(work, WHOLE_TREE_COMMIT)
        if whole is not None:
            name = f"whole-tree deliveries ({WHOLE_TREE_COMMIT})"
            designs.append(Design(name, str(whole), "{prefix}.fileconsul/head"))
        old = baseline_code(work)
        if old is not None:
            name = f"before revisions ({BASELINE_COMMIT})"
            designs.append(Design(name, str(old), "{prefix}/.fileconsul/manifest"))
        for design in designs:
            design.check()
        rows = []
        for files in sizes:
            for design in designs:
                args = (agent_url, agent_pid, work, files)
                alone = one_design(design, *args, 0, pushes, idle_seconds)
                for count in counts:
                    watched = one_design(design, *args, count, pushes, idle_seconds)
                    rows.append(per_watcher(watched, alone))
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "\nfleet: one-file push; the agent's CPU and bytes written per watcher per push (beyond"
        " the pushes alone), and the pushes alone",
        f"  {'design':<28} {'files':>6} {'nodes':>5} {'CPU ms':>8} {'KiB out':>8} "
        f"{'conv p50':>9} {'conv max':>9} {'push ms':>8} {'push KiB':>9}",
    ]
    for r in rows:
        lines.append(
            f"  {r['design']:<28} {r['files']:>6} {r['watchers']:>5} "
            f"{r['server_cpu_ms_per_watcher_per_push']:>8} "
            f"{r['server_kib_written_per_watcher_per_push']:>8} "
            f"{r['converged_p50_s']:>9} {r['converged_max_s']:>9} "
            f"{r['push_alone_cpu_ms']:>8} {r['push_alone_kib_written']:>9}"
        )
    return "\n".join(lines)
