"""Faults: a real three-server cluster losing its leader, racing pushers, killed pulls, a
full disk. Each test ends with no lost change and no torn file."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KV, Node
from tests.consul_agent import Agent, Cluster
from tests.processes import Background, background, fileconsul_args, wait_until

# The agents of this module listen on fixed loopback addresses: one worker runs them all.
pytestmark = pytest.mark.xdist_group("cluster")


@pytest.fixture(scope="module")
def cluster(consul_bin: str) -> Iterator[Cluster]:
    started = Cluster(consul_bin).start()
    yield started
    started.cleanup()


def heal(cluster: Cluster) -> None:
    """Restart every stopped agent and wait until the cluster serves writes again."""
    for agent in cluster.agents:
        if agent.process is None:
            agent.start(wait_leader=False)
    for agent in cluster.agents:
        agent.wait_ready(timeout=60)
    cluster.wait_healthy()


def tree_of(count: int, tag: str) -> dict[str, bytes]:
    return {f"d{i % 10}/f{i:04}": f"{tag} {i}\n".encode() * 50 for i in range(count)}


def write_all(node: Node, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        node.write(rel, data)


def test_leader_killed_during_a_1000_file_push(cluster: Cluster, make_node: Any) -> None:
    client1, client2 = cluster.clients
    pusher = make_node("pusher", addr=client1.addr)
    puller = make_node("puller", addr=client2.addr)
    new = tree_of(1000, "new")
    write_all(pusher, new)
    try:
        with background(fileconsul_args(pusher, "push", "--lock-wait", "60")) as push:
            time.sleep(random.uniform(0.3, 0.8))
            cluster.leader().kill()
            seen = []
            while push.process.poll() is None:
                result = puller.run("pull", "--lock-wait", "1", "--no-report")
                seen.append(len(puller.files()))
                # A pull sees the old tree (nothing) or the whole new one, never a part.
                assert len(puller.files()) in (0, 1000), result.output
            code = push.wait()
            assert code in (0, 3), push.output()
        cluster.leader()
        result = pusher.run("push", "--lock-wait", "90")
        assert result.exit_code == 0, result.output
        result = puller.run("pull", "--lock-wait", "30", "--no-report")
        assert result.exit_code == 0, result.output
        assert puller.files() == new
    finally:
        heal(cluster)


def test_leader_killed_while_two_nodes_watch(cluster: Cluster, make_node: Any) -> None:
    client1, client2 = cluster.clients
    a = make_node("a", addr=client1.addr)
    watch1 = make_node("w1", addr=client1.addr)
    watch2 = make_node("w2", addr=client2.addr)
    a.write("f", "before")
    assert a.run("push").exit_code == 0
    try:
        with (
            background(fileconsul_args(watch1, "watch", "--no-report")),
            background(fileconsul_args(watch2, "watch", "--no-report")),
        ):
            wait_until(lambda: (watch1.root / "f").exists() and (watch2.root / "f").exists())
            cluster.leader().kill()
            cluster.leader(timeout=60)
            elected = time.monotonic()
            a.write("f", "after")
            result = a.run("push", "--lock-wait", "60")
            assert result.exit_code == 0, result.output
            wait_until(
                lambda: watch1.read("f") == b"after" and watch2.read("f") == b"after",
                timeout=15 + (time.monotonic() - elected),
                what="both watchers to converge",
            )
    finally:
        heal(cluster)


def test_racing_pushes_of_one_file_have_exactly_one_winner(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "base")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    for round_ in range(8):
        a.write("f", f"a{round_}")
        b.write("f", f"b{round_}")
        pa = Background(fileconsul_args(a, "push", "--no-report"))
        pb = Background(fileconsul_args(b, "push", "--no-report"))
        codes = {"a": pa.wait(), "b": pb.wait()}
        pa.stop()
        pb.stop()
        assert sorted(codes.values()) == [0, 4], codes
        winner = "a" if codes["a"] == 0 else "b"
        loser_node = b if winner == "a" else a
        assert kv.files(a.prefix)["f"] == f"{winner}{round_}".encode()
        assert loser_node.read("f") == f"{'b' if winner == 'a' else 'a'}{round_}".encode()
        assert loser_node.run("pull", "--force").exit_code == 0


def test_a_pull_killed_at_random_points_never_leaves_a_torn_file(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    previous: dict[str, bytes] = {}
    for version in range(6):
        files = {rel: os.urandom(30_000) for rel in tree_of(300, str(version))}
        write_all(a, files)
        assert a.run("push", "--force").exit_code == 0
        proc = Background(fileconsul_args(b, "pull", "--no-report"))
        time.sleep(random.uniform(0.05, 0.9))
        proc.signal(signal.SIGKILL)
        proc.wait()
        proc.stop()
        # Every file is whole: the version before this pull, or the new one.
        for rel, data in b.files().items():
            assert data in (files[rel], previous.get(rel)), rel
        result = b.run("pull", "--no-report")
        assert result.exit_code == 0, result.output
        assert b.files() == files
        assert not [p for p in b.root.rglob("*") if ".fileconsul-tmp-" in p.name]
        previous = files


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root); skipped where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_fails_the_pull_cleanly(small_disk: Path, make_node: Any, agent: Agent) -> None:
    a = make_node("a")
    files = {f"f{i}": os.urandom(100_000) for i in range(15)}
    write_all(a, files)
    assert a.run("push").exit_code == 0
    b = Node(small_disk / "node", agent.addr, a.prefix)
    b.root.mkdir()
    result = b.run("pull", "--no-report")
    assert result.exit_code == 5, result.output
    assert "No space left on device" in result.stderr
    assert "nothing was changed" in result.stderr
    assert b.files() == {}
    assert not [p for p in b.root.rglob("*") if ".fileconsul-tmp-" in p.name]
    assert not (b.root / ".fileconsul" / "records").exists()


def test_the_agent_unreachable_changes_nothing_locally(make_node: Any) -> None:
    from tests.consul_agent import free_port

    b = make_node("b", addr=f"127.0.0.1:{free_port()}")
    b.write("mine", "local")
    for command in ("pull", "push", "status"):
        result = b.run(command)
        assert result.exit_code == 3
    assert b.files() == {"mine": b"local"}


@pytest.mark.skipif(sys.platform != "linux", reason="Linux file names")
def test_odd_local_entries_have_a_documented_outcome(node: Node, kv: KV) -> None:
    node.write("Case", "upper")
    node.write("case", "lower")
    (node.root / "loop").symlink_to(node.root / "loop")
    (node.root / "broken").symlink_to(node.root / "missing")
    result = node.run("push")
    assert result.exit_code == 0, result.output
    assert kv.files(node.prefix) == {"Case": b"upper", "case": b"lower"}
    assert "skipped loop: symbolic link, not followed" in result.stderr
    assert "skipped broken: symbolic link, not followed" in result.stderr
    (node.root / os.fsdecode(b"latin1-\xe9")).write_text("x")
    result = node.run("push")
    assert result.exit_code == 5
    assert "not valid UTF-8" in result.stderr
