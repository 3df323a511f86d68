"""The replication case: three datacenters joined over the WAN on loopback addresses
(tests/federation.py), and `fileconsul replicate` carrying a tree of N files from dc1 into
dc2 and dc3 (one process, through dc2's agent). It measures the time from a one-file commit
in dc1 until both targets hold it (their heads at its revision), over a number of commits,
and, per revision, what the replicator read from dc1 (for both targets: what crosses from the
source) and what it read in and sent to each target (its own metrics), at each tree size.

Beside them, in the same run: the floor, the least a copier of that one value must do through
the same agent (read it raw from dc1, write it into dc2 and into dc3), and what a key-by-key
replicator that watches the prefix receives per change (consul-replicate's way: a blocking
`?recurse` of the prefix answers with every value each time).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench import fleet
from fileconsul import config
from fileconsul.commands import push
from fileconsul.commands.context import Context
from fileconsul.store.client import ConsulClient
from tests.consul_agent import free_port
from tests.federation import Federation

CHANGED = "a1/b0/c0/f00001.bin"


def replication(consul: str, python: str, sizes: list[int], commits: int) -> list[dict[str, Any]]:
    federation = Federation(consul).start()
    work = Path(tempfile.mkdtemp(prefix="replication-"))
    try:
        return [one_size(federation, python, work, files, commits) for files in sizes]
    finally:
        federation.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class _Heads:
    """The head revisions of the targets, polled."""

    def __init__(self, federation: Federation, prefix: str) -> None:
        self.prefix = prefix
        self.http = {dc: httpx.Client(base_url=federation.url(dc)) for dc in ("dc2", "dc3")}

    def hold(self, revision: int) -> bool:
        for client in self.http.values():
            response = client.get(f"/v1/kv/{self.prefix}.fileconsul/head", params={"raw": ""})
            if response.status_code != 200 or response.json()["revision"] < revision:
                return False
        return True

    def close(self) -> None:
        for client in self.http.values():
            client.close()


def one_size(
    federation: Federation, python: str, work: Path, files: int, commits: int
) -> dict[str, Any]:
    prefix = f"replication-{files}"
    src = work / prefix
    fleet.make_tree(src, files)
    settings = config.settings(addr=federation.addr("dc1"), prefix=prefix, basepath=src, env={})
    run = Context(settings, ConsulClient(settings.consul))
    push.push(run)
    args = [python, "-m", "fileconsul", "replicate", "--addr", federation.addr("dc2")]
    args += ["--prefix", prefix, "--from", "dc1", "--to", "dc2", "--to", "dc3"]
    port = free_port()
    args += ["--log-format", "json", "--wait", "60", "--metrics-addr", f"127.0.0.1:{port}"]
    log = work / f"{prefix}.log"
    heads = _Heads(federation, prefix)
    latencies: list[float] = []
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        started = time.perf_counter()
        fleet.wait_for(partial(heads.hold, 1), 900, poll=0.01)
        whole = time.perf_counter() - started
        changed = src / CHANGED
        before = _scrape(port)
        for _ in range(commits):
            changed.write_bytes(os.urandom(fleet.FILE_SIZE))
            revision = push.push(run).revision
            committed = time.perf_counter()
            fleet.wait_for(partial(heads.hold, revision), 60, poll=0.001)
            latencies.append(time.perf_counter() - committed)
        after = _scrape(port)
        floor = _floor(federation, prefix, commits)
        watched = _prefix_answer(federation, prefix)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        run.client.close()
        heads.close()
    logged = _revisions_logged(log)
    if logged < 2 * (commits + 1):
        raise RuntimeError(f"the replicator logged {logged} commits, not {2 * (commits + 1)}")

    def per_revision(name: str) -> int:
        return round((after[name] - before[name]) / commits)

    source = per_revision("fileconsul_replication_source_bytes_total")
    sent = statistics.mean(
        per_revision(f'fileconsul_replication_sent_bytes_total{{target="{dc}"}}')
        for dc in ("dc2", "dc3")
    )
    read_in = statistics.mean(
        per_revision(f'fileconsul_replication_received_bytes_total{{target="{dc}"}}')
        for dc in ("dc2", "dc3")
    )
    return {
        "files": files,
        "commits": commits,
        "first_take_whole_s": round(whole, 3),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * _percentile(latencies, 0.99), 1),
        "floor_p50_ms": round(1000 * statistics.median(floor), 1),
        "from_source_bytes_per_revision": source,
        "sent_bytes_per_revision_per_target": round(sent),
        "read_in_target_bytes_per_revision_per_target": round(read_in),
        "prefix_watch_bytes_per_change": watched,
        "ratios": {
            "p50 / floor": round(statistics.median(latencies) / statistics.median(floor), 2),
            "from the source per revision / a prefix watch's answer": round(source / watched, 4),
        },
    }


def _floor(federation: Federation, prefix: str, count: int) -> list[float]:
    """Reading the changed value raw from dc1 and writing it into dc2 and into dc3, through
    dc2's agent, as a copier of that one value must at the least."""
    seconds = []
    with httpx.Client(base_url=federation.url("dc2"), timeout=30) as http:
        for i in range(count):
            started = time.perf_counter()
            value = http.get(f"/v1/kv/{prefix}/{CHANGED}", params={"dc": "dc1", "raw": ""})
            for dc in ("dc2", "dc3"):
                key = f"/v1/kv/replication-floor/{i}"
                http.put(key, params={"dc": dc}, content=value.content).raise_for_status()
            seconds.append(time.perf_counter() - started)
    return seconds


def _prefix_answer(federation: Federation, prefix: str) -> int:
    """The bytes of one answer to a blocking `?recurse` of the prefix."""
    with httpx.Client(base_url=federation.url("dc2"), timeout=60) as http:
        response = http.get(f"/v1/kv/{prefix}/", params={"dc": "dc1", "recurse": ""})
        return len(response.content)


def _revisions_logged(log: Path) -> int:
    """The commits the replicator logged, both targets and the first take counted."""
    count = 0
    for line in log.read_text().splitlines():
        if line.startswith("{") and json.loads(line)["event"] in ("replicate", "whole"):
            count += 1
    return count


def _scrape(port: int) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "\nreplication: a one-file commit in dc1 until dc2 and dc3 hold it; bytes per revision"
        " read from dc1 (for both), and read in and sent to each target",
        f"  {'files':>6} {'p50 ms':>8} {'p99 ms':>8} {'floor ms':>9} {'from dc1 B':>11} "
        f"{'read in B':>10} {'sent B':>9} {'prefix watch B':>15} {'first take s':>13}",
    ]
    for r in rows:
        lines.append(
            f"  {r['files']:>6} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['floor_p50_ms']:>9} "
            f"{r['from_source_bytes_per_revision']:>11} "
            f"{r['read_in_target_bytes_per_revision_per_target']:>10} "
            f"{r['sent_bytes_per_revision_per_target']:>9} "
            f"{r['prefix_watch_bytes_per_change']:>15} {r['first_take_whole_s']:>13}"
        )
    return "\n".join(lines)
