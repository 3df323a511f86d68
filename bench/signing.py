"""Signed revisions beside unsigned ones, same agent, same tree, same run: a one-file push and
its delivery to a watcher, a first pull into an empty directory, the in-process cost of
verifying one revision, and SHA-256 beside BLAKE2b over every file of the tree."""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import fleet

if TYPE_CHECKING:
    from bench.bench import Bench

#: Verifications timed in-process for the median.
VERIFY_RUNS = 2000


def measure(bench: Bench, count: int, runs: int) -> dict[str, Any]:
    from bench.bench import FILE_SIZE, make_tree, tree_items

    work = Path(tempfile.mkdtemp(prefix=f"signing{count}-", dir=bench.work))
    key = work / "release"
    subprocess.run(
        [bench.python, "-m", "fileconsul", "keygen", str(key)], check=True, capture_output=True
    )
    trust = ["--trusted-keys", f"{key}.pub"]
    result: dict[str, Any] = {"files": count, "cases": {}}
    cases: dict[str, list[float]] = {}
    sides: dict[str, list[str]] = {"unsigned": [], "signed": ["--sign-key", str(key)]}
    trees: dict[str, tuple[str, Path]] = {}
    for side, sign in sides.items():
        src = work / f"src-{side}"
        make_tree(src, count)
        prefix = bench.prefix()
        first = bench.fileconsul("push", prefix, src, *sign)
        cases.setdefault(f"first push, {side}", []).append(first.seconds)
        trees[side] = (prefix, src)
    for i in range(runs):
        for side, sign in sides.items():
            empty = work / f"empty-{side}-{i}"
            empty.mkdir()
            os.sync()
            pulled = bench.fileconsul("pull", trees[side][0], empty, *(trust if sign else []))
            cases.setdefault(f"pull into empty dir, {side}", []).append(pulled.seconds)
    for side, sign in sides.items():
        prefix, src = trees[side]
        node = work / f"watcher-{side}"
        node.mkdir()
        args = [bench.python, "-m", "fileconsul", "watch", "--addr", bench.agent.addr]
        args += ["--prefix", prefix, "--basepath", str(node), "--no-report", "-q"]
        args += ["--drift-scan", "0", *(trust if sign else [])]
        watcher = subprocess.Popen(args)
        try:
            first_file = tree_items(src)[0][0]
            fleet.wait_for((node / first_file).exists, 120, poll=0.01)
            target = src / first_file
            for _ in range(runs):
                target.write_bytes(os.urandom(FILE_SIZE))
                os.sync()
                pushed = bench.fileconsul("push", prefix, src, *sign)
                cases.setdefault(f"push one changed, {side}", []).append(pushed.seconds)
            cases[f"delivery to a watcher, {side}"] = _deliveries(
                bench, prefix, src, node, runs, key if sign else None
            )
        finally:
            watcher.terminate()
            watcher.wait(timeout=30)
    for prefix, _ in trees.values():
        bench.drop(prefix)
    result["cases"] = {name: round(statistics.median(v), 4) for name, v in cases.items()}
    s = result["cases"]
    result["ratios"] = {
        f"{case}: signed / unsigned": round(s[f"{case}, signed"] / s[f"{case}, unsigned"], 3)
        for case in (
            "first push",
            "pull into empty dir",
            "push one changed",
            "delivery to a watcher",
        )
    }
    result["extra_ms"] = {
        case: round(1000 * (s[f"{case}, signed"] - s[f"{case}, unsigned"]), 1)
        for case in ("push one changed", "delivery to a watcher")
    }
    result["verify_one_revision_ms"] = verify_one()
    result["hash_every_file_ms"] = hash_every_file(tree_items(trees["signed"][1]))
    shutil.rmtree(work, ignore_errors=True)
    return result


def _deliveries(
    bench: Bench, prefix: str, src: Path, node: Path, runs: int, key: Path | None
) -> list[float]:
    """Seconds from a one-file push's start (in-process: its scan, commit and record) to the
    file on the watcher's disk."""
    from fileconsul import config
    from fileconsul.commands import push
    from fileconsul.commands.context import Context
    from fileconsul.local.keys import secret_key
    from fileconsul.store.client import ConsulClient

    settings = config.settings(addr=bench.agent.addr, prefix=prefix, basepath=src, env={})
    run = Context(settings, ConsulClient(settings.consul), signer=secret_key(key) if key else None)
    found = []
    try:
        for i in range(runs):
            content = f"delivery {i}\n".encode()
            (src / "delivered").write_bytes(content)
            started = time.perf_counter()
            push.push(run)  # the watcher may hold it before the push has saved its record
            fleet.wait_for(partial(_holds, node / "delivered", content), 30, poll=0.001)
            found.append(time.perf_counter() - started)
    finally:
        run.client.close()
    return found


def _holds(path: Path, content: bytes) -> bool:
    return path.exists() and path.read_bytes() == content


def verify_one() -> dict[str, float]:
    """The median cost of checking one revision's signature on a node (its statement, its
    id and the Ed25519 check), and what importing PyNaCl costs a command once."""
    imported = _import_seconds()
    from fileconsul.model import seal
    from fileconsul.model.facts import FileInfo
    from fileconsul.model.records import Change, Commit, Head
    from fileconsul.model.signing import SecretKey

    key = SecretKey(os.urandom(32))
    change = Change(
        "a0/b0/c0/f00000.bin",
        "modified",
        FileInfo("0" * 16, 4096),
        FileInfo("1" * 16, 4096),
        "2" * 64,
        "3" * 64,
    )
    commit = Commit(
        12,
        "2025-01-01T00:00:00Z",
        "node",
        "user",
        "",
        (change,),
        10000,
        "4" * 16,
        seal=seal.Seal((11, "5" * 64), "6" * 64, ((3, "0000000012/" + "7" * 64),)),
    )
    history = "0123456789abcdef"
    commit = replace(commit, signature=seal.sign(key, seal.revision_id("p", history, commit)))
    head = Head(commit, True, 100, 1, history=history)
    trust = seal.Trust((key.public,))
    seal.signed_revision("p", history, head, commit, trust)  # PyNaCl's first use
    times = []
    for _ in range(VERIFY_RUNS):
        begin = time.perf_counter()
        seal.signed_revision("p", history, head, commit, trust)
        times.append(time.perf_counter() - begin)
    return {
        "median_ms": round(1000 * statistics.median(times), 4),
        "import_ms": round(1000 * imported, 2),
    }


def _import_seconds() -> float:
    """What importing PyNaCl adds to a process that has fileconsul's command line loaded."""
    code = (
        "import time, fileconsul.cli; t = time.perf_counter(); import nacl.signing; "
        "print(time.perf_counter() - t)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout)


def hash_every_file(items: list[tuple[str, bytes]]) -> dict[str, float]:
    """What a first pull of a signed tree adds per file: a cryptographic hash of every byte."""
    found = {}
    for name, hashing in (
        ("sha256", hashlib.sha256),
        ("blake2b", partial(hashlib.blake2b, digest_size=32)),
    ):
        begin = time.perf_counter()
        for _, data in items:
            hashing(data).hexdigest()
        found[name] = round(1000 * (time.perf_counter() - begin), 2)
    return found


def table(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        lines.append(f"\nsigned revisions, {row['files']} files")
        for name, seconds in row["cases"].items():
            lines.append(f"  {name:<40} {seconds:>9.4f} s")
        for name, ratio in row["ratios"].items():
            lines.append(f"  ratio {name:<48} {ratio:>8}")
        for name, ms in row["extra_ms"].items():
            lines.append(f"  {name}: signed adds {ms} ms")
        verify = row["verify_one_revision_ms"]
        lines.append(
            f"  verifying one revision: {verify['median_ms']} ms (PyNaCl's import, once: "
            f"{verify['import_ms']} ms)"
        )
        hashed = row["hash_every_file_ms"]
        lines.append(
            f"  hashing every file: sha256 {hashed['sha256']} ms, blake2b {hashed['blake2b']} ms"
        )
    return "\n".join(lines)
