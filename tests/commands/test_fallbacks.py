"""When the cheap path (the head, the records since this node's revision, the changed values)
is not enough: writes by other tools under the prefix, a node away for longer than the kept
history, a node without a record, and a stale read racing a commit. Against a real agent; the
race is injected in front of it, since one agent is never behind itself."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import httpx
import pytest

from fileconsul.commands import pull
from fileconsul.store import read as remote
from fileconsul.store.layout import log_key
from tests.conftest import KV, RecordingTransport, library_run
from tests.consul_agent import Agent
from tests.processes import background, fileconsul_args, wait_until


def test_a_foreign_write_into_a_committed_tree_is_seen_by_status_watch_and_pull(
    make_node: Any, consul_bin: str, agent: Agent
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("conf", "1")
    assert a.run("push").exit_code == 0
    # A foreign write moves no head: a watcher looks for one every --wait seconds.
    with background(fileconsul_args(b, "watch", "--wait", "1", "--no-report")) as watcher:
        wait_until(lambda: (b.root / "conf").exists(), what="the first apply")
        subprocess.run(
            [consul_bin, "kv", "put", f"-http-addr={agent.addr}", f"{b.prefix}/motd", "hi"],
            check=True,
            capture_output=True,
        )
        wait_until(lambda: (b.root / "motd").exists(), 20, "the foreign write")
        status = a.run("status")
        assert status.exit_code == 1
        assert "motd" in status.stdout
        # A commit afterwards adopts the foreign key and reaches the watcher as usual.
        a.write("conf", "2")
        assert a.run("push").exit_code == 0
        wait_until(lambda: b.read("conf") == b"2", 20, "the next commit")
        assert watcher.process.poll() is None
    assert b.read("motd") == b"hi"
    assert a.run("pull").exit_code == 0
    assert a.files() == b.files() == {"conf": b"2", "motd": b"hi"}


def test_a_node_away_longer_than_the_kept_history_reads_the_whole_tree(
    make_node: Any, kv: KV
) -> None:
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    a.write("y", "0")
    assert a.run("push", "--keep", "3").exit_code == 0
    assert b.run("pull").exit_code == 0
    assert c.run("pull").exit_code == 0
    a.write("x", "added while b and c were away")
    assert a.run("push").exit_code == 0  # revision 2: it falls out of the kept history
    for i in range(1, 6):
        a.write("y", str(i))
        assert a.run("push").exit_code == 0
    kept = kv.meta(a.prefix)
    assert log_key(a.prefix, 2) not in kept
    assert log_key(a.prefix, 7) in kept
    # Following only the records still kept would miss x: both read the head's manifest.
    assert b.run("pull").exit_code == 0
    assert c.run("watch", "--once").exit_code == 0
    want = {"x": b"added while b and c were away", "y": b"5"}
    assert b.files() == c.files() == want
    assert b.run("status").exit_code == 0


def test_a_node_without_a_record_reads_the_tree_and_keeps_its_equal_files(make_node: Any) -> None:
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    a.write("same", "s")
    a.write("bin/run", "#!/bin/sh\n", 0o755)
    assert a.run("push").exit_code == 0
    a.write("other", "o")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    shutil.rmtree(b.root / ".fileconsul")  # the record is lost; the files are the head's
    result = b.run("pull")
    assert result.exit_code == 0, result.stderr
    assert b.run("status").exit_code == 0
    assert c.run("pull").exit_code == 0  # an empty directory, no record
    want = {"same": b"s", "bin/run": b"#!/bin/sh\n", "other": b"o"}
    assert b.files() == c.files() == want
    # Both hold the head's revision again: the next commit reaches them the cheap way.
    a.write("other", "o2")
    assert a.run("push").exit_code == 0
    assert b.run("watch", "--once").exit_code == 0
    assert b.read("other") == b"o2"


class LaggingFollower(RecordingTransport):
    """A server that has the new head but not yet the value it names: its first `lags` stale
    reads of `path` answer the value's previous bytes (every one, with None)."""

    def __init__(self, path: str, old: bytes, lags: int | None) -> None:
        super().__init__()
        self.path, self.old, self.lags = path, old, lags
        self.lagged = 0
        #: Each read of `path`: was it stale?
        self.stale_reads: list[bool] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path != self.path:
            return response
        self.stale_reads.append("stale" in request.url.params)
        if not self.stale_reads[-1]:
            return response
        if self.lags is not None and self.lagged >= self.lags:
            return response
        self.lagged += 1
        response.read()
        response.close()
        return httpx.Response(200, content=self.old, headers=response.headers, request=request)


@pytest.mark.parametrize("lags", [1, None], ids=["catches-up", "stays-behind"])
def test_a_stale_value_read_racing_a_commit_is_read_again(make_node: Any, lags: int | None) -> None:
    """A follower that catches up is read again (stale); one that stays behind makes the node
    read from the leader. Either way the node applies the committed bytes, or nothing."""
    a, b = make_node("a"), make_node("b")
    a.write("conf", "old\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    a.write("conf", "new\n")
    assert a.run("push").exit_code == 0
    transport = LaggingFollower(f"/v1/kv/{b.prefix}/conf", b"old\n", lags)
    run = library_run(b, transport, stale=True)
    try:
        # As a watcher woken by the commit: the head it read, trusted alone, read stale.
        head = remote.read_head(run.client, b.prefix, stale=True)
        assert head is not None
        assert head.revision == 2
        outcome = pull.pull(run, pull.PullOptions(others=False), head=head)
    finally:
        run.client.close()
    assert outcome.revision == 2
    assert b.read("conf") == b"new\n"
    reads = transport.stale_reads
    if lags == 1:
        assert reads == [True, True]  # the read that lagged, and the next one
    else:
        assert transport.lagged >= 2
        assert reads[: transport.lagged] == [True] * transport.lagged
        assert reads[-1] is False  # from the leader
    assert b.run("status").exit_code == 0
