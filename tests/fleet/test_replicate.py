"""Replication across datacenters, against three real agents in dc1, dc2 and dc3 joined over
the WAN (tests/federation.py): revisions carried in order byte for byte, a source that fails
in every way a source can, replicators killed mid-revision, replicas refusing pushes, staged
rollouts, and the one-pass and whole-tree paths."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import xxhash

from tests.conftest import KV, Node
from tests.consul_agent import free_port
from tests.federation import Federation
from tests.processes import Background, background, fileconsul_args, wait_until

#: The replicators' HTTP timeout: a frozen source fails their requests fast.
FAST = {**os.environ, "FILECONSUL_HTTP_TIMEOUT": "1"}

# The agents of this module listen on fixed loopback addresses: one worker runs them all.
pytestmark = pytest.mark.xdist_group("federation")


@pytest.fixture(scope="module")
def federation(consul_bin: str) -> Iterator[Federation]:
    started = Federation(consul_bin).start()
    yield started
    started.cleanup()


def node_in(federation: Federation, dc: str, root: Path, prefix: str) -> Node:
    root.mkdir(parents=True, exist_ok=True)
    return Node(root, federation.addr(dc), prefix)


def replicator(
    federation: Federation, prefix: str, via: str, *targets: str, extra: tuple[str, ...] = ()
) -> list[str]:
    args = [sys.executable, "-m", "fileconsul", "replicate", "--addr", federation.addr(via)]
    args += ["--prefix", prefix, "--from", "dc1", "--log-format", "json", "--wait", "10"]
    args += ["--max-backoff", "0.5"]
    for dc in targets:
        args += ["--to", dc]
    return args + list(extra)


def events(proc: Background, kind: str | None = None) -> list[dict[str, Any]]:
    found = []
    for line in proc.output().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if kind is None or event["event"] == kind:
                found.append(event)
    return found


def head_revision(federation: Federation, dc: str, prefix: str) -> int:
    response = httpx.get(f"{federation.url(dc)}/v1/kv/{prefix}.fileconsul/head?raw")
    return int(response.json()["revision"]) if response.status_code == 200 else 0


def at(federation: Federation, prefix: str, revision: int, *dcs: str) -> Callable[[], bool]:
    """Whether every one of `dcs` has its head at `revision`."""

    def check() -> bool:
        return all(head_revision(federation, dc, prefix) == revision for dc in dcs)

    return check


def tree_of(node: Node) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mode."""
    return {
        rel: (data, stat.S_IMODE((node.root / rel).stat().st_mode))
        for rel, data in node.files().items()
    }


def kv_state(federation: Federation, dc: str, prefix: str) -> dict[str, tuple[bytes, int]]:
    """The file keys of `prefix` in `dc`: each value and its Flags (the hash)."""
    tree = KV(federation.url(dc)).tree(prefix)
    return {key: (entry["value"], entry["flags"]) for key, entry in tree.items()}


def modes_in(federation: Federation, dc: str, prefix: str) -> dict[str, Any]:
    """The head's manifest as stored in `dc`: paths, hashes, sizes and modes."""
    manifest = KV(federation.url(dc)).manifest(prefix)
    return {k: manifest[k] for k in ("paths", "hashes", "sizes", "modes")}


def log_json(federation: Federation, dc: str, node: Node) -> Any:
    result = Node(node.root, federation.addr(dc), node.prefix).run("log", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def change(node: Node, revision: int) -> None:
    """Revision `revision`'s edit: a modified file, a new one in a new directory, a mode
    flipped, and every third revision a deletion."""
    node.write("app.conf", f"revision = {revision}\n" * (revision % 5 + 1))
    node.write(f"d{revision % 4}/f{revision}", os.urandom(64 + revision))
    script = node.root / "bin" / "run"
    if not script.exists():
        node.write("bin/run", "#!/bin/sh\n")
    script.chmod(0o755 if revision % 2 else 0o644)
    if revision % 3 == 0:
        (node.root / f"d{(revision - 1) % 4}" / f"f{revision - 1}").unlink()


def test_fifty_revisions_reach_dc2_and_dc3_in_order_byte_for_byte_with_the_same_log(
    federation: Federation, tmp_path: Path, prefix: str
) -> None:
    a = node_in(federation, "dc1", tmp_path / "a", prefix)
    w = node_in(federation, "dc3", tmp_path / "w", prefix)
    args = replicator(federation, prefix, "dc2", "dc2", "dc3")
    with (
        background(args, FAST) as rep,
        background(fileconsul_args(w, "watch", "--no-report", "--wait", "10")) as watcher,
    ):
        change(a, 1)
        assert a.run("push", "-m", "revision 1").exit_code == 0
        wait_until(at(federation, prefix, 1, "dc2", "dc3"), what="revision 1 in both")
        for revision in range(2, 51):
            change(a, revision)
            assert a.run("push", "-m", f"revision {revision}").exit_code == 0, revision
        wait_until(at(federation, prefix, 50, "dc2", "dc3"), 60, what="revision 50 in both")
        wait_until(lambda: tree_of(w) == tree_of(a), 30, what="the watcher in dc3")
        for dc in ("dc2", "dc3"):
            committed = [
                e["revision"] for e in events(rep) if e.get("revision") and e.get("target") == dc
            ]
            assert committed == list(range(1, 51)), dc
        applied = [e for e in watcher.output().splitlines() if "apply: applied r" in e]
        revisions = [int(line.split("applied r")[1].split(":")[0]) for line in applied]
        assert revisions == sorted(set(revisions))
        assert revisions[-1] == 50
    for dc in ("dc2", "dc3"):
        assert kv_state(federation, dc, prefix) == kv_state(federation, "dc1", prefix)
        assert modes_in(federation, dc, prefix) == modes_in(federation, "dc1", prefix)
        assert log_json(federation, dc, a) == log_json(federation, "dc1", a)


#: What a target holds at one moment: its head revision (0: none), its file keys' values,
#: the record of the revision after the head (an unfinished commit's journal) and the
#: contents that commit set aside (by hash).
Snapshot = tuple[int, dict[str, bytes], bool, dict[str, bytes]]


def snapshot(url: str, prefix: str) -> Snapshot | None:
    """The target's head and everything under its prefix, read in one transaction that checks
    the head did not move (None: it moved meanwhile)."""
    head = httpx.get(f"{url}/v1/kv/{prefix}.fileconsul/head")
    if head.status_code == 404:
        return None
    entry = head.json()[0]
    revision = json.loads(base64.b64decode(entry["Value"]))["revision"]
    meta = f"{prefix}.fileconsul/"
    ops = [
        {"KV": {"Verb": "check-index", "Key": f"{meta}head", "Index": entry["ModifyIndex"]}},
        {"KV": {"Verb": "get-tree", "Key": f"{prefix}/"}},
        {"KV": {"Verb": "get-tree", "Key": f"{meta}log/{revision + 1:010d}"}},
        {"KV": {"Verb": "get-tree", "Key": f"{meta}blobs/{revision + 1:010d}/"}},
    ]
    response = httpx.put(f"{url}/v1/txn", json=ops)
    if response.status_code == 409:
        return None
    files: dict[str, bytes] = {}
    kept: dict[str, bytes] = {}
    journal = False
    for result in response.json()["Results"][1:]:
        key, value = result["KV"]["Key"], base64.b64decode(result["KV"]["Value"] or "")
        if key.startswith(f"{prefix}/"):
            files[key] = value
        elif "/log/" in key:
            journal = True
        else:
            kept[key.rpartition("/")[2]] = value
    return revision, files, journal, kept


def torn(state: Snapshot, expected: dict[int, dict[str, bytes]]) -> str | None:
    """Why the head names a revision whose values are not all where a reader finds them
    (in their keys, or set aside by the unfinished commit whose journal follows the head);
    None when they are."""
    revision, files, journal, kept = state
    wanted = expected.get(revision)
    if wanted is None:
        return None  # a revision the test has not recorded yet
    for key, value in wanted.items():
        digest = xxhash.xxh3_64_hexdigest(value)
        if files.get(key) != value and not (journal and kept.get(digest) == value):
            return f"head r{revision}: {key} is not its value, nor kept aside"
    extra = set(files) - set(wanted)
    if extra and not journal:
        return f"head r{revision}: {sorted(extra)[:3]} are not in it and no commit is under way"
    return None


@contextmanager
def sampling(url: str, prefix: str, check: Callable[[Snapshot], str | None]) -> Iterator[list[str]]:
    """A thread that snapshots a target every few milliseconds while the block runs; the
    problems `check` finds, in a list that the test asserts is empty."""
    problems: list[str] = []
    samples = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            try:
                state = snapshot(url, prefix)
            except httpx.HTTPError:
                continue
            if state is not None:
                samples[0] += 1
                found = check(state)
                if found is not None:
                    problems.append(found)

    thread = threading.Thread(target=sample, name="sampler")
    thread.start()
    try:
        yield problems
    finally:
        done.set()
        thread.join()
    assert samples[0] > 10, "the sampler saw too little"


def test_a_source_stopped_killed_or_wiped_changes_no_file_in_a_target_and_replication_resumes(
    federation: Federation, tmp_path: Path, prefix: str
) -> None:
    a = node_in(federation, "dc1", tmp_path / "a", prefix)
    rng = random.Random(24)
    expected: dict[int, dict[str, bytes]] = {}

    def push(revision: int) -> None:
        expected[revision] = {f"{prefix}/{rel}": data for rel, data in a.files().items()}
        result = a.run("push", "--max-delete", "5", "-m", f"revision {revision}")
        assert result.exit_code == 0, result.output

    def heads_at(revision: int) -> bool:
        return all(head_revision(federation, dc, prefix) == revision for dc in ("dc2", "dc3"))

    def exactly(state: Snapshot) -> str | None:
        revision, files, _, _ = state  # each commit here is one transaction: no journal
        want = expected.get(revision)
        return None if want is None or files == want else f"head r{revision}: {files.keys()}"

    with ExitStack() as stack:
        watched = [
            stack.enter_context(sampling(federation.url(dc), prefix, exactly))
            for dc in ("dc2", "dc3")
        ]
        rep = stack.enter_context(
            background(replicator(federation, prefix, "dc2", "dc2", "dc3"), FAST)
        )
        for revision in range(1, 21):
            change(a, revision)
            push(revision)
            time.sleep(rng.uniform(0, 0.03))
            if revision in (7, 15):
                federation.kill_and_restart("dc1")
            else:
                with federation.stopped("dc1"):
                    time.sleep(rng.uniform(0.05, 0.3))
        wait_until(lambda: heads_at(20), 60, what="both targets at revision 20")
        retries = [
            e for e in events(rep, "retry") if "dc1" in e["message"] or "Consul" in e["message"]
        ]
        assert retries, "the replicator never had to wait for the source"
        # The source's files deleted whole while a revision is on its way: nothing moves.
        rep.signal(signal.SIGSTOP)
        change(a, 21)
        push(21)
        wipe = [federation.binary, "kv", "delete", f"-http-addr={federation.addr('dc1')}"]
        subprocess.run([*wipe, "-recurse", f"{prefix}/"], check=True, capture_output=True)
        rep.signal(signal.SIGCONT)
        wait_until(
            lambda: any("not in the source" in e["message"] for e in events(rep, "retry")),
            20,
            what="the replicator to wait",
        )
        assert heads_at(20)
        for dc in ("dc2", "dc3"):
            assert {k: v for k, (v, _) in kv_state(federation, dc, prefix).items()} == expected[20]
        # A push re-creates the tree in dc1 (revision 22): both revisions go on.
        expected[22] = {f"{prefix}/{rel}": data for rel, data in a.files().items()}
        assert a.run("push").exit_code == 0
        assert head_revision(federation, "dc1", prefix) == 22
        wait_until(lambda: heads_at(22), 30, what="both targets at revision 22")
    assert watched == [[], []]
    for dc in ("dc2", "dc3"):
        assert kv_state(federation, dc, prefix) == kv_state(federation, "dc1", prefix)


class Replicators:
    """Two replicator processes for dc2, each to be killed (SIGKILL, by tests/fault.py) just
    before its Nth transaction of file writes, N drawn at random: the active one dies
    mid-revision, and the standby must take over."""

    def __init__(self, federation: Federation, prefix: str, rng: random.Random) -> None:
        self.federation, self.prefix, self.rng = federation, prefix, rng
        self.kv = KV(federation.url("dc2"))
        self.running: list[Background] = []
        self.kills = 0

    def start(self) -> None:
        args = replicator(self.federation, self.prefix, "dc2", "dc2")
        args[1:3] = ["-m", "tests.fault"]
        env = {**FAST, "FILECONSUL_TEST_FAULT": f"kill:{self.rng.randint(1, 9)}"}
        self.running.append(Background(args, env))

    def dead(self) -> list[Background]:
        return [p for p in self.running if p.process.poll() is not None]

    def reap(self) -> None:
        """Each one killed: Consul would end its sessions once their TTLs ran out; they are
        ended now instead. The standby must then take over, and a new one stands by."""
        for proc in self.dead():
            assert proc.process.returncode == -signal.SIGKILL, proc.output()[-2000:]
            self.kills += 1
            self.running.remove(proc)
            self.kv.end_sessions(f"fileconsul push {self.prefix}")
            self.kv.end_sessions(f"fileconsul replicate {self.prefix} dc2 {proc.process.pid}")
            proc.stop()
            wait_until(self.taken_over(self.running[0]), 20, what="the standby to take over")
            self.start()

    @staticmethod
    def taken_over(standby: Background) -> Callable[[], bool]:
        """Whether `standby` is active now (or has died in its turn, writing)."""
        return lambda: bool(events(standby, "active")) or standby.process.poll() is not None

    def or_else(self, check: Callable[[], bool]) -> Callable[[], bool]:
        """Whether a replicator died, or else `check` holds."""
        return lambda: bool(self.dead()) or check()

    def stop(self) -> None:
        """Stop each one (SIGTERM lets a commit finish, or its fault kills it meanwhile), and
        end what sessions a killed one left."""
        for proc in self.running:
            proc.stop()
            self.kv.end_sessions(f"fileconsul push {self.prefix}")
            self.kv.end_sessions(f"fileconsul replicate {self.prefix} dc2 {proc.process.pid}")
        self.running = []


def test_the_active_replicator_killed_mid_revision_ten_times_never_leaves_a_torn_head(
    federation: Federation, tmp_path: Path, prefix: str
) -> None:
    a = node_in(federation, "dc1", tmp_path / "a", prefix)
    expected: dict[int, dict[str, bytes]] = {}

    def push(revision: int) -> None:
        # 100 files of 1 KiB change: every commit goes under the lock, in several batches.
        for i in range(100):
            a.write(f"d{i % 5}/f{i}", os.urandom(1024))
        expected[revision] = {f"{prefix}/{rel}": data for rel, data in a.files().items()}
        assert a.run("push", "-m", f"revision {revision}").exit_code == 0

    replicators = Replicators(federation, prefix, random.Random(10))
    revision = 1
    push(revision)
    try:
        with sampling(federation.url("dc2"), prefix, lambda s: torn(s, expected)) as problems:
            replicators.start()
            replicators.start()
            while replicators.kills < 10:
                committed = at(federation, prefix, revision, "dc2")
                wait_until(replicators.or_else(committed), 30, what="a death or a commit")
                replicators.reap()
                if committed():
                    revision += 1
                    push(revision)
            replicators.stop()
            replicators.running = [Background(replicator(federation, prefix, "dc2", "dc2"), FAST)]
            wait_until(at(federation, prefix, revision, "dc2"), 30, what="the last revision")
        assert problems == []
    finally:
        replicators.stop()
    assert kv_state(federation, "dc2", prefix) == kv_state(federation, "dc1", prefix)
    fresh = node_in(federation, "dc2", tmp_path / "fresh", prefix)
    assert fresh.run("pull").exit_code == 0
    assert {f"{prefix}/{rel}": data for rel, data in fresh.files().items()} == expected[revision]


def local_state(node: Node) -> dict[str, bytes]:
    """This node's own files under .fileconsul/: its record and hash cache."""
    own = node.root / ".fileconsul"
    return {p.name: p.read_bytes() for p in sorted(own.rglob("*")) if p.is_file()}


def consul_state(federation: Federation, dc: str, prefix: str) -> dict[str, Any]:
    kv = KV(federation.url(dc))
    return {**kv.tree(prefix), **kv.meta(prefix)}


def test_a_push_or_a_rollback_in_a_replica_is_refused_naming_its_source_and_changes_nothing(
    federation: Federation, tmp_path: Path, prefix: str
) -> None:
    a = node_in(federation, "dc1", tmp_path / "a", prefix)
    for text in ("v1\n", "v2\n"):
        a.write("app.conf", text)
        assert a.run("push").exit_code == 0
    b = node_in(federation, "dc2", tmp_path / "b", prefix)
    assert b.run("replicate", "--from", "dc1", "--to", "dc2", "--once").exit_code == 0
    assert b.run("pull").exit_code == 0
    b.write("app.conf", "an edit made in dc2\n")
    b.write("new.conf", "a file made in dc2\n")
    before, mine = consul_state(federation, "dc2", prefix), local_state(b)
    # From a node in dc2, and from dc1's agent into dc2 (--dc): never around the replica.
    for args in (("push",), ("push", "--force"), ("rollback", "1"), ("push", "--dc", "dc2")):
        node = b if args[-1] != "dc2" else Node(b.root, federation.addr("dc1"), prefix)
        result = node.run(*args)
        assert result.exit_code == 10, (args, result.output)
        assert "replica of datacenter dc1" in result.stderr
        assert "--dc dc1" in result.stderr
        assert consul_state(federation, "dc2", prefix) == before
        assert local_state(b) == mine
    status = json.loads(b.run("status", "--json").stdout)
    assert [c["path"] for c in status["push"]] == ["app.conf", "new.conf"]


def scrape(port: int) -> dict[str, float]:
    found = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def test_a_staged_rollout_holds_a_revision_rejected_in_dc1_out_of_dc2_and_a_fix_goes_on(
    federation: Federation, tmp_path: Path, prefix: str
) -> None:
    p = node_in(federation, "dc1", tmp_path / "p", prefix)
    good = node_in(federation, "dc1", tmp_path / "good", prefix)
    picky = node_in(federation, "dc1", tmp_path / "picky", prefix)
    far = node_in(federation, "dc2", tmp_path / "far", prefix)
    p.write("app.conf", "mode = fine\n")
    assert p.run("push", "--no-report").exit_code == 0
    port = free_port()
    gate = ("--min-current", "1", "--soak", "0.3", "--metrics-addr", f"127.0.0.1:{port}")
    watch = ("watch", "--wait", "10", "--node")
    refuse_bad = ("--check", "! grep -q BAD app.conf", "--halt-on-failure")
    lag = 'fileconsul_replication_lag_revisions{target="dc2"}'
    with (
        background(fileconsul_args(good, *watch, "good", "--check", "true")),
        background(fileconsul_args(picky, *watch, "picky", *refuse_bad)),
        background(fileconsul_args(far, *watch, "far", "--check", "true")) as far_watch,
        background(replicator(federation, prefix, "dc2", "dc2", extra=gate), FAST) as rep,
    ):
        wait_until(at(federation, prefix, 1, "dc2"), 30, what="revision 1 in dc2")
        p.write("app.conf", "mode = BAD\n")
        assert p.run("push", "--no-report").exit_code == 0
        wait_until(lambda: scrape(port).get(lag) == 1, 20, what="dc2 one revision behind")
        wait_until(lambda: any("halted" in e["message"] for e in events(rep, "held")), 20)
        time.sleep(1.0)  # the gate is read at least once a second: it stays shut
        assert head_revision(federation, "dc2", prefix) == 1
        seconds = scrape(port)['fileconsul_replication_lag_seconds{target="dc2"}']
        assert seconds > 0
        p.write("app.conf", "mode = fixed\n")
        assert p.run("push", "--no-report").exit_code == 0
        wait_until(at(federation, prefix, 3, "dc2"), 30, what="the fix in dc2")
        wait_until(lambda: tree_of(far) == tree_of(p), 30, what="the fix on dc2's node")
        assert "applied r2" not in far_watch.output()
        assert scrape(port).get(lag) == 0
    halt = json.loads(KV(federation.url("dc2")).meta(prefix)[f"{prefix}.fileconsul/halt"]["value"])
    assert (halt["revision"], halt["node"]) == (2, "picky")


def test_once_takes_a_target_whole_refuses_a_tree_of_its_own_adopts_it_and_promotes(
    federation: Federation, tmp_path: Path, prefix: str
) -> None:
    a = node_in(federation, "dc1", tmp_path / "a", prefix)
    b = node_in(federation, "dc2", tmp_path / "b", prefix)
    c = node_in(federation, "dc3", tmp_path / "c", prefix)

    def pushes(count: int) -> None:
        for _ in range(count):
            a.write("app.conf", os.urandom(100))
            assert a.run("push", "--keep", "3").exit_code == 0

    def once(node: Node, dc: str, *extra: str) -> Any:
        return node.run("replicate", "--from", "dc1", "--to", dc, "--once", *extra)

    pushes(6)  # dc1 keeps revisions 4 to 6
    result = once(b, "dc2")
    assert result.exit_code == 0, result.output
    assert "took revision 6 of dc1 whole" in result.output
    assert "dc2 holds no revision yet" in result.output
    assert [r["revision"] for r in log_json(federation, "dc2", b)["revisions"]] == [6]
    pushes(6)  # dc2 at 6 is now behind what dc1 keeps (10 to 12)
    result = once(b, "dc2")
    assert "behind the revisions dc1 keeps" in result.output
    assert kv_state(federation, "dc2", prefix) == kv_state(federation, "dc1", prefix)
    c.write("its-own.conf", "dc3's own\n")
    assert c.run("push").exit_code == 0
    before = consul_state(federation, "dc3", prefix)
    result = once(c, "dc3")
    assert result.exit_code == 5
    assert "a tree of its own" in result.stderr
    assert "--adopt" in result.stderr
    assert consul_state(federation, "dc3", prefix) == before
    assert once(c, "dc3", "--adopt").exit_code == 0
    assert kv_state(federation, "dc3", prefix) == kv_state(federation, "dc1", prefix)
    result = b.run("replicate", "--promote", "--to", "dc2")
    assert result.exit_code == 0
    assert "no longer a replica of dc1" in result.output
    assert b.run("pull").exit_code == 0
    b.write("app.conf", "dc2 goes its own way\n")
    assert b.run("push").exit_code == 0
    assert once(b, "dc2").exit_code == 5


def test_status_fleet_shows_several_datacenters_with_their_sources(
    federation: Federation, tmp_path: Path, prefix: str
) -> None:
    a = node_in(federation, "dc1", tmp_path / "a", prefix)
    b = node_in(federation, "dc2", tmp_path / "b", prefix)
    a.write("app.conf", "one\n")
    assert a.run("push", "--node", "n1").exit_code == 0
    assert b.run("replicate", "--from", "dc1", "--to", "dc2", "--once").exit_code == 0
    assert b.run("pull", "--node", "n2").exit_code == 0
    result = a.run("status", "--fleet", "--dcs", "dc1,dc2", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["datacenters"]
    assert [(d["datacenter"], d["replica_of"], d["revision"]) for d in shown] == [
        ("dc1", None, 1),
        ("dc2", "dc1", 1),
    ]
    assert [[n["node"] for n in d["nodes"]] for d in shown] == [["n1"], ["n2"]]
    a.write("app.conf", "two\n")
    assert a.run("push", "--node", "n1").exit_code == 0
    result = a.run("status", "--fleet", "--dcs", "dc1,dc2")
    assert result.exit_code == 1
    assert "Datacenter dc2 (a replica of dc1):" in result.stdout
    assert "Revision 1:" in result.stdout
    assert "Revision 2:" in result.stdout


def test_a_large_push_into_another_datacenter_takes_the_lock_there(
    federation: Federation, tmp_path: Path, prefix: str
) -> None:
    """A session of dc1's agent names a node dc2's catalog does not have: Consul refuses it
    ("Missing node registration"). The push lock in dc2 is taken on a node of dc2 instead."""
    a = node_in(federation, "dc1", tmp_path / "a", prefix)
    for i in range(80):  # over one transaction: the push goes under the lock
        a.write(f"f{i:02}", f"file {i}\n")
    result = a.run("push", "--dc", "dc2")
    assert result.exit_code == 0, result.output
    assert KV(federation.url("dc2")).files(prefix) == a.files()
    assert KV(federation.url("dc1")).files(prefix) == {}
