"""The delivery case: what one watching node spends on a one-file push, whatever the tree's
size. One `fileconsul watch` holds a tree; one-file pushes follow each other; for each, the
time from the commit (the head landing, seen by a blocking query of the benchmark's own) to
the new bytes on the watcher's disk, and the watcher's CPU time per push. The design before
deliveries followed the change (this repository's commit BEFORE) runs in the same run, on the
same trees and the same agent, as the baseline.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench import fleet

BEFORE = fleet.WHOLE_TREE_COMMIT


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(
    design: fleet.Design, agent_url: str, work: Path, files: int, pushes: int
) -> dict[str, Any]:
    addr = agent_url.removeprefix("http://")
    prefix = f"delivery-{design.name.split()[0]}-{files}-{time.monotonic_ns()}"
    src, node = work / f"{prefix}-src", work / f"{prefix}-node"
    fleet.make_tree(src, files)
    node.mkdir()
    current = fleet.Design("fileconsul", "", "")
    current.run(*current.args("push", addr, prefix, src, "--no-report"))
    changed = src / "a1" / "b0" / "c0" / "f00001.bin"
    target = node / "a1" / "b0" / "c0" / "f00001.bin"
    http = httpx.Client(base_url=agent_url, timeout=120)
    head = f"/v1/kv/{prefix}.fileconsul/head"
    latencies: list[float] = []
    # Scans for drift are periodic, not per delivery: off here, as they are before.
    quiet = ("--drift-scan", "0") if design.path == "" else ()
    watcher = subprocess.Popen(
        design.args("watch", addr, prefix, node, "--no-report", "-q", *quiet),
        env=design.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        fleet.wait_for(target.exists, 900)
        time.sleep(1.0)  # the first pull's record and cache are written
        cpu_before = _cpu(watcher.pid)
        for _ in range(pushes):
            content = os.urandom(fleet.FILE_SIZE)
            changed.write_bytes(content)
            index = int(http.get(head).headers["X-Consul-Index"])
            landed: list[float] = []

            def wait_head(index: int = index, landed: list[float] = landed) -> None:
                http.get(head, params={"index": index, "wait": "60s"})
                landed.append(time.monotonic())

            waiting = threading.Thread(target=wait_head)
            waiting.start()
            push = subprocess.Popen(
                current.args("push", addr, prefix, src, "--no-report"),
                env=current.env(),
                stdout=subprocess.DEVNULL,
            )
            fleet.wait_for(partial(_holds, target, content), 60, poll=0.0005)
            arrived = time.monotonic()
            waiting.join()
            if push.wait(timeout=120) != 0:
                raise RuntimeError("a push of the delivery case failed")
            latencies.append(arrived - landed[0])
            time.sleep(0.2)  # the next push is one of its own, not a burst
        cpu = _cpu(watcher.pid) - cpu_before
    finally:
        watcher.terminate()
        watcher.wait(timeout=60)
        with_prefix = f"/v1/kv/{prefix}"
        http.delete(with_prefix, params={"recurse": ""})
        http.close()
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(node, ignore_errors=True)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return {
        "design": design.name,
        "files": files,
        "pushes": pushes,
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * p99, 1),
        # The watcher's CPU over the pushes, its pushes' reads and waits included.
        "cpu_ms_per_delivery": round(1000 * cpu / pushes, 1),
    }


def _holds(path: Path, content: bytes) -> bool:
    try:
        return path.read_bytes() == content
    except OSError:
        return False


def delivery(agent_url: str, sizes: list[int], pushes: int) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="delivery-"))
    try:
        designs = [fleet.Design("fileconsul", "", "")]
        old = fleet.baseline_code(work, BEFORE)
        if old is not None:
            designs.append(fleet.Design(f"whole-tree deliveries ({BEFORE})", str(old), ""))
        for design in designs:
            design.check()
        return [one(d, agent_url, work, files, pushes) for files in sizes for d in designs]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "\ndelivery: one watcher, one-file pushes; from the head landing to the bytes on its"
        " disk, and its CPU per delivery",
        f"  {'design':<32} {'files':>6} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms':>7}",
    ]
    for r in rows:
        lines.append(
            f"  {r['design']:<32} {r['files']:>6} {r['p50_ms']:>7} {r['p99_ms']:>7} "
            f"{r['cpu_ms_per_delivery']:>7}"
        )
    return "\n".join(lines)
