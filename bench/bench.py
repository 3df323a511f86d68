"""fileconsul's benchmark: fileconsul beside Consul's own CLI and a plain-httpx floor, same
agent, same tree, same run. Every figure is also a ratio to its baseline, since absolute
times drift on a noisy machine while ratios hold.

    scripts/bench                       # 100, 1,000 and 10,000 files, 5 runs each
    scripts/bench --sizes 100 --runs 1  # the CI smoke run
"""

from __future__ import annotations

import argparse
import base64
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pybase64
import xxhash

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import delivery, fleet, replication, signing, ui  # noqa: E402
from tests.consul_agent import Agent, consul_binary  # noqa: E402

FILE_SIZE = 4096
#: The floor runs its transactions one at a time and four in flight (as fileconsul does), and
#: counts the faster.
FLOOR_DEPTHS = (1, 4)
TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


@dataclass
class Measure:
    seconds: float
    received: int = 0
    rss_kib: int = 0


@dataclass
class Case:
    name: str
    runs: list[Measure] = field(default_factory=list)

    def median(self) -> Measure:
        return Measure(
            statistics.median(m.seconds for m in self.runs),
            int(statistics.median(m.received for m in self.runs)),
            max(m.rss_kib for m in self.runs),
        )


def make_tree(root: Path, count: int) -> int:
    """`count` files of 4 KiB random bytes, spread over three levels of ten directories."""
    for i in range(count):
        path = root / f"a{i % 10}" / f"b{i // 10 % 10}" / f"c{i // 100 % 10}" / f"f{i:05}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(FILE_SIZE))
    return count * FILE_SIZE


def tree_items(root: Path) -> list[tuple[str, bytes]]:
    return sorted(
        (p.relative_to(root).as_posix(), p.read_bytes())
        for p in root.rglob("*")
        if p.is_file() and ".fileconsul" not in p.parts
    )


class Bench:
    def __init__(self, agent: Agent, consul: str, work: Path, python: str) -> None:
        self.agent = agent
        self.consul = consul
        self.work = work
        #: The interpreter that runs fileconsul's commands: a user's install of it.
        self.python = python
        # The floor at its best: values are incompressible, so no gzip; base64 by the same
        # SIMD codec fileconsul uses.
        self.http = httpx.Client(
            base_url=agent.url, timeout=120, headers={"Accept-Encoding": "identity"}
        )
        self.counter = 0

    def prefix(self) -> str:
        self.counter += 1
        return f"bench{self.counter}"

    def drop(self, prefix: str) -> None:
        """Delete a tree no case reads again, so the agent holds one tree, not dozens."""
        if prefix:
            self.http.delete(f"/v1/kv/{prefix}/", params={"recurse": ""}).raise_for_status()
            self.http.delete(f"/v1/kv/{prefix}.lock").raise_for_status()
            self.http.delete(f"/v1/kv/{prefix}.fileconsul/", params={"recurse": ""})

    def fileconsul(self, command: str, prefix: str, basepath: Path, *extra: str) -> Measure:
        args = [self.python, "-m", "fileconsul", command, "-v", "--addr", self.agent.addr]
        args += ["--prefix", prefix, "--basepath", str(basepath)]
        if command == "pull":
            args.append("--no-report")
        return self.timed(args + list(extra), allowed=(0, 1))

    def startup(self) -> Measure:
        """A fileconsul process that only starts (`--version`): the interpreter and the
        imports of the command line, which every command pays before its work."""
        return self.timed([self.python, "-m", "fileconsul", "--version"])

    def timed(self, args: list[str], allowed: tuple[int, ...] = (0,)) -> Measure:
        """Run a command; its wall time, bytes received (from -v) and peak RSS."""
        # Peak RSS comes from GNU time: a child forked straight from this (large) process
        # would report this process's size as its own peak.
        rss_file = self.work / "rss"
        wrapper = [TIME, "-q", "-f", "%M", "-o", str(rss_file)] if TIME else []
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.Popen([*wrapper, *args], stdout=out, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            err.seek(0)
            errors = err.read().decode(errors="replace")
        rss = int(rss_file.read_text().split()[-1]) if TIME else usage.ru_maxrss
        if proc.returncode not in allowed:
            raise RuntimeError(f"{args[:5]} exited {proc.returncode}: {errors[-800:]}")
        received = 0
        for line in errors.splitlines():
            if "bytes received" in line:
                received = int(line.split(",")[1].split()[0])
        return Measure(seconds, received, rss)

    def head(self, prefix: str) -> int:
        """The head revision of `prefix` (0: none yet)."""
        response = self.http.get(f"/v1/kv/{prefix}.fileconsul/head", params={"raw": ""})
        return int(response.json()["revision"]) if response.status_code == 200 else 0

    def history_held(self, prefix: str) -> dict[str, Any]:
        """What fileconsul keeps beside the tree, by kind: keys and bytes of values."""
        response = self.http.get(f"/v1/kv/{prefix}.fileconsul/", params={"recurse": ""})
        kinds: dict[str, dict[str, int]] = {}
        for entry in response.json():
            kind = entry["Key"][len(prefix) + len(".fileconsul/") :].split("/")[0]
            held = kinds.setdefault(kind, {"keys": 0, "bytes": 0})
            held["keys"] += 1
            held["bytes"] += len(pybase64.b64decode(entry["Value"] or ""))
        return {
            "revisions": kinds.get("log", {}).get("keys", 0),
            "keys": sum(k["keys"] for k in kinds.values()),
            "bytes": sum(k["bytes"] for k in kinds.values()),
            "by_kind": kinds,
        }

    # -- baselines -------------------------------------------------------------------------

    def kv_import(self, prefix: str, items: list[tuple[str, bytes]]) -> Measure:
        body = [
            {"key": f"{prefix}/{rel}", "flags": 0, "value": base64.b64encode(data).decode()}
            for rel, data in items
        ]
        path = self.work / "import.json"
        path.write_text(json.dumps(body))
        return self.timed(
            [self.consul, "kv", "import", f"-http-addr={self.agent.addr}", f"@{path}"]
        )

    def kv_export(self, prefix: str) -> Measure:
        return self.timed(
            [self.consul, "kv", "export", f"-http-addr={self.agent.addr}", f"{prefix}/"]
        )

    def floor_write(self, prefix: str, items: list[tuple[str, bytes]], depth: int) -> Measure:
        """Full transactions of 64 sets, `depth` of them in flight at once."""
        ops = [
            {
                "KV": {
                    "Verb": "set",
                    "Key": f"{prefix}/{rel}",
                    "Value": pybase64.b64encode_as_string(data),
                    "Flags": xxhash.xxh3_64_intdigest(data),
                }
            }
            for rel, data in items
        ]
        batches = [ops[i : i + 64] for i in range(0, len(ops), 64)]
        start = time.perf_counter()

        def put(batch: list[dict[str, Any]]) -> None:
            self.http.put("/v1/txn", json=batch).raise_for_status()

        self.each(batches, put, depth)
        return Measure(time.perf_counter() - start)

    def floor_recurse(self, prefix: str) -> Measure:
        start = time.perf_counter()
        response = self.http.get(f"/v1/kv/{prefix}/", params={"recurse": ""})
        values = [pybase64.b64decode(e["Value"], validate=True) for e in response.json()]
        del values
        return Measure(time.perf_counter() - start)

    def floor_gets(self, keys: list[str], depth: int) -> Measure:
        """Transactions of 64 gets, `depth` of them in flight at once."""

        def get(batch: list[str]) -> None:
            ops = [{"KV": {"Verb": "get", "Key": k}} for k in batch]
            result = self.http.put("/v1/txn", json=ops).json()
            values = [
                pybase64.b64decode(r["KV"]["Value"], validate=True) for r in result["Results"]
            ]
            del values

        start = time.perf_counter()
        self.each([keys[i : i + 64] for i in range(0, len(keys), 64)], get, depth)
        return Measure(time.perf_counter() - start)

    @staticmethod
    def floor_files(root: Path, items: list[tuple[str, bytes]]) -> Measure:
        """Creating the tree's files with plain os calls, no Consul, no staging, no fsync:
        what the machine's file system alone costs a pull into an empty directory."""
        start = time.perf_counter()
        for rel, data in items:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)
        return Measure(time.perf_counter() - start)

    @staticmethod
    def each(batches: list[Any], send: Callable[[Any], None], depth: int) -> None:
        if depth == 1:
            for batch in batches:
                send(batch)
            return
        with ThreadPoolExecutor(max_workers=depth) as pool:
            list(pool.map(send, batches))


def run_size(bench: Bench, count: int, runs: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"size{count}-", dir=bench.work))
    src = work / "src"
    tree_bytes = make_tree(src, count)
    items = tree_items(src)
    cases: dict[str, Case] = {}

    def record(name: str, fn: Callable[[], Measure]) -> None:
        # Each case starts with no dirty pages of the one before: a pull's syncfs would
        # otherwise flush what `consul kv export` or the file floor left behind.
        os.sync()
        case = cases.setdefault(name, Case(name))
        case.runs.append(fn())

    prefix = ""
    for _ in range(runs):
        shutil.rmtree(src / ".fileconsul", ignore_errors=True)
        bench.drop(prefix)
        prefix = bench.prefix()  # the last of these pushes is the tree the cases below use
        record("first push", partial(bench.fileconsul, "push", prefix, src))
        record("consul kv import", lambda: bench.kv_import(bench.prefix(), items))
        bench.drop(f"bench{bench.counter}")
        for depth in FLOOR_DEPTHS:
            name = f"floor: txn writes, {depth} in flight"
            record(name, partial(bench.floor_write, bench.prefix(), items, depth))
            bench.drop(f"bench{bench.counter}")
    keys = [f"{prefix}/{rel}" for rel, _ in items]
    bench.fileconsul("status", prefix, src)  # caches the hashes of files written just now
    for _ in range(runs):
        record("status, no change", lambda: bench.fileconsul("status", prefix, src))
    changed = src / items[0][0]
    original = changed.read_bytes()
    changed.write_bytes(os.urandom(FILE_SIZE))
    for _ in range(runs):
        record("status, one changed", lambda: bench.fileconsul("status", prefix, src))
    changed.write_bytes(original)
    bench.fileconsul("status", prefix, src)
    for i in range(runs):
        empty = work / f"empty{i}"
        empty.mkdir()
        record("pull into empty dir", partial(bench.fileconsul, "pull", prefix, empty))
        record("consul kv export", lambda: bench.kv_export(prefix))
        record("floor: one ?recurse read", lambda: bench.floor_recurse(prefix))
        record("floor: creating the files", partial(bench.floor_files, work / f"f{i}", items))
        record("floor: start-up", bench.startup)
        for depth in FLOOR_DEPTHS:
            record(f"floor: txn gets, {depth} in flight", partial(bench.floor_gets, keys, depth))
    node_b = work / "empty0"
    for i in range(runs):
        target = src / items[i + 1][0]
        target.write_bytes(os.urandom(FILE_SIZE))
        bench.fileconsul("push", prefix, src)
        record("pull one changed", lambda: bench.fileconsul("pull", prefix, node_b))
    for i in range(runs):
        target = src / items[i + 1][0]
        target.write_bytes(os.urandom(FILE_SIZE))
        record("push one changed", lambda: bench.fileconsul("push", prefix, src))
    held = history_cases(bench, prefix, src, items, runs, record)
    medians = {name: case.median() for name, case in cases.items()}
    result = {
        "files": count,
        "tree_bytes": tree_bytes,
        "cases": {
            name: {
                "seconds": round(m.seconds, 4),
                "ms_per_file": round(1000 * m.seconds / count, 4),
                "received_bytes": m.received,
                "peak_rss_mb": round(m.rss_kib / 1024, 1),
            }
            for name, m in medians.items()
        },
    }
    result["history"] = held
    s = {name: m.seconds for name, m in medians.items()}
    # The floor is the best way of each: serial or in flight, one read or transactions.
    floor_writes = min(v for k, v in s.items() if k.startswith("floor: txn writes"))
    floor_reads = min(v for k, v in s.items() if k.startswith("floor: txn gets") or "recurse" in k)
    result["ratios"] = {
        "first push / consul kv import": round(s["first push"] / s["consul kv import"], 3),
        "first push / floor writes": round(s["first push"] / floor_writes, 3),
        "pull into empty / floor reads": round(s["pull into empty dir"] / floor_reads, 3),
        "pull into empty / (floor reads + creating the files)": round(
            s["pull into empty dir"] / (floor_reads + s["floor: creating the files"]), 3
        ),
        "pull into empty / (floor reads + creating the files + start-up)": round(
            s["pull into empty dir"]
            / (floor_reads + s["floor: creating the files"] + s["floor: start-up"]),
            3,
        ),
        "pull into empty / consul kv export": round(
            s["pull into empty dir"] / s["consul kv export"], 3
        ),
        "status bytes received / tree bytes": round(
            medians["status, no change"].received / tree_bytes, 5
        ),
    }
    shutil.rmtree(work, ignore_errors=True)
    return result


def history_cases(
    bench: Bench,
    prefix: str,
    src: Path,
    items: list[tuple[str, bytes]],
    runs: int,
    record: Callable[[str, Callable[[], Measure]], None],
) -> dict[str, Any]:
    """The history at its default depth: one-file pushes (in-process, untimed) until the head
    is past the revisions kept, then `log` of all of them, `diff` of one file against the
    revision before, and `rollback` of one changed file. (A one-file push with history is
    "push one changed".) Returns what the history holds in Consul."""
    from fileconsul import config
    from fileconsul.commands import push
    from fileconsul.commands.context import Context
    from fileconsul.model import records as history
    from fileconsul.store.client import ConsulClient

    settings = config.settings(addr=bench.agent.addr, prefix=prefix, basepath=src, env={})
    run = Context(settings, ConsulClient(settings.consul))
    try:
        for i in range(history.DEFAULT_KEEP + 10 - bench.head(prefix)):
            (src / items[1 + i % (len(items) - 1)][0]).write_bytes(os.urandom(FILE_SIZE))
            push.push(run)
    finally:
        run.client.close()
    held = bench.history_held(prefix)
    last = items[1 + (history.DEFAULT_KEEP + 9) % (len(items) - 1)][0]
    for _ in range(runs):
        record("log, every kept revision", partial(bench.fileconsul, "log", prefix, src))
    before = str(bench.head(prefix) - 1)
    for _ in range(runs):
        record("diff of one file", partial(bench.fileconsul, "diff", prefix, src, before, last))
    for _ in range(runs):
        # The revision before the head differs from it by one file: each rollback restores it.
        back = str(bench.head(prefix) - 1)
        rollback = partial(bench.fileconsul, "rollback", prefix, src, back)
        record("rollback of one changed file", rollback)
    return held


def watch_latency(bench: Bench, pushes: int) -> dict[str, Any]:
    """Time from a push's commit to the file on disk in a second node under `watch`."""
    from fileconsul import config
    from fileconsul.commands import push
    from fileconsul.commands.context import Context
    from fileconsul.store.client import ConsulClient

    work = Path(tempfile.mkdtemp(prefix="watch-", dir=bench.work))
    a, b = work / "a", work / "b"
    a.mkdir()
    b.mkdir()
    prefix = bench.prefix()
    (a / "seed").write_text("seed")
    settings = config.settings(addr=bench.agent.addr, prefix=prefix, basepath=a, env={})
    run = Context(settings, ConsulClient(settings.consul))
    push.push(run)
    args = [bench.python, "-m", "fileconsul", "watch", "--addr", bench.agent.addr]
    args += ["--prefix", prefix, "--basepath", str(b), "--no-report", "-q"]
    watcher = subprocess.Popen(args)
    latencies = []
    try:
        fleet.wait_for(lambda: (b / "seed").exists(), 30, poll=0.001)
        target = b / "f"
        for i in range(pushes):
            content = f"push {i}\n".encode()
            (a / "f").write_bytes(content)
            push.push(run)
            committed = time.perf_counter()
            fleet.wait_for(partial(_holds, target, content), 30, poll=0.001)
            latencies.append(time.perf_counter() - committed)
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)
        run.client.close()
        shutil.rmtree(work, ignore_errors=True)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
    return {
        "pushes": pushes,
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * p99, 1),
    }


def _holds(path: Path, content: bytes) -> bool:
    return path.exists() and path.read_bytes() == content


def table(results: list[dict[str, Any]], watch: dict[str, Any]) -> str:
    lines = []
    for res in results:
        lines.append(f"\n{res['files']} files ({res['tree_bytes'] // 1024} KiB)")
        lines.append(f"  {'case':<34} {'seconds':>9} {'ms/file':>9} {'received':>12} {'RSS MB':>8}")
        for name, c in res["cases"].items():
            lines.append(
                f"  {name:<34} {c['seconds']:>9.3f} {c['ms_per_file']:>9.3f} "
                f"{c['received_bytes']:>12} {c['peak_rss_mb']:>8}"
            )
        for name, ratio in res["ratios"].items():
            lines.append(f"  ratio {name:<52} {ratio:>8}")
        held = res["history"]
        lines.append(
            f"  history in Consul: {held['revisions']} revisions, {held['keys']} keys, "
            f"{held['bytes']} bytes ({', '.join(f'{k}: {v}' for k, v in held['by_kind'].items())})"
        )
    lines.append(
        f"\nwatch propagation over {watch['pushes']} pushes: p50 {watch['p50_ms']} ms, "
        f"p99 {watch['p99_ms']} ms"
    )
    return "\n".join(lines)


def _single_client(
    consul: str, work: Path, opts: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    agent = Agent(consul).start()
    try:
        bench = Bench(agent, consul, work, opts.python)
        results = [run_size(bench, int(n), opts.runs) for n in opts.sizes.split(",")]
        watch = watch_latency(bench, opts.watch_pushes)
        sizes = [int(n) for n in opts.signing_sizes.split(",") if n]
        watch["signing"] = [signing.measure(bench, n, opts.runs) for n in sizes]
        bench.http.close()
        sizes = [int(n) for n in opts.delivery_sizes.split(",") if n]
        watch["delivery"] = delivery.delivery(agent.url, sizes, opts.delivery_pushes)
        counts = [int(n) for n in opts.ui_nodes.split(",") if n]
        watch["ui"] = ui.measure(agent.addr, opts.python, counts, opts.runs)
        return results, watch
    finally:
        agent.cleanup()


def _fleet(consul: str, opts: argparse.Namespace) -> list[dict[str, Any]]:
    # The fleet case gets an agent of its own: one that has held and dropped the trees of the
    # cases above keeps spending CPU on them for a while, which would count as the watchers'.
    agent = Agent(consul).start()
    try:
        assert agent.process is not None
        return fleet.fleet(
            agent.url,
            agent.process.pid,
            [int(n) for n in opts.fleet_sizes.split(",")],
            [int(n) for n in opts.watchers.split(",")],
            opts.fleet_pushes,
            opts.fleet_idle,
        )
    finally:
        agent.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--watch-pushes", type=int, default=50)
    parser.add_argument(
        "--delivery-sizes", default="100,10000", help="tree sizes of the delivery case"
    )
    parser.add_argument(
        "--delivery-pushes", type=int, default=30, help="one-file pushes per delivery size"
    )
    parser.add_argument("--fleet-sizes", default="1000,10000", help="tree sizes of the fleet case")
    parser.add_argument("--watchers", default="10,30", help="watcher counts of the fleet case")
    parser.add_argument("--fleet-pushes", type=int, default=5)
    parser.add_argument(
        "--fleet-idle",
        type=float,
        default=5.0,
        help="seconds to measure the agent idle before each fleet measurement",
    )
    parser.add_argument(
        "--ui-nodes", default="5000", help="fleet sizes of the dashboard case (reports planted)"
    )
    parser.add_argument(
        "--replication-sizes", default="1000,10000", help="tree sizes of the replication case"
    )
    parser.add_argument(
        "--replication-commits",
        type=int,
        default=20,
        help="one-file commits timed from dc1 to dc2 and dc3, per size",
    )
    parser.add_argument(
        "--signing-sizes", default="10000", help="tree sizes of the signed-revisions case"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs fileconsul's commands (scripts/bench: a clean install)",
    )
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fileconsul-bench-"))
    # pip compiles an installed package's bytecode; a source checkout under
    # PYTHONDONTWRITEBYTECODE would compile fileconsul on every start instead.
    compileall.compile_dir(ROOT / "fileconsul", quiet=1)
    consul = consul_binary()
    version = subprocess.run([consul, "version"], capture_output=True, text=True).stdout
    try:
        results, watch = _single_client(consul, work, opts)
        fleet_rows = _fleet(consul, opts)
        replication_rows = replication.replication(
            consul,
            opts.python,
            [int(n) for n in opts.replication_sizes.split(",")],
            opts.replication_commits,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dashboard = watch.pop("ui")
    deliveries = watch.pop("delivery")
    signed = watch.pop("signing")
    report = {
        "consul": version.splitlines()[0],
        "runs": opts.runs,
        "sizes": results,
        "watch": watch,
        "delivery": deliveries,
        "fleet": fleet_rows,
        "ui": dashboard,
        "replication": replication_rows,
        "signing": signed,
    }
    print(table(results, watch))
    print(delivery.table(deliveries))
    print(fleet.table(fleet_rows))
    print(ui.table(dashboard))
    print(replication.table(replication_rows))
    print(signing.table(signed))
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
