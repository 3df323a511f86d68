"""Committing a revision, against a real agent: the keys, the manifest, one transaction or a
locked batch write, check-and-set, the push lock, and undoing a push that died."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import httpx
import xxhash

from fileconsul.commands import push
from fileconsul.store.layout import lock_key
from tests.conftest import KV, Node, RecordingTransport, is_write_txn, library_run
from tests.processes import with_fault


def test_keys_hold_raw_bytes_with_the_xxh3_hash_in_flags(node: Node, kv: KV) -> None:
    node.write("cfg/app.conf", "port = 80\n")
    assert node.run("push").exit_code == 0
    entry = kv.tree(node.prefix)[f"{node.prefix}/cfg/app.conf"]
    assert entry["value"] == b"port = 80\n"
    assert entry["flags"] == xxhash.xxh3_64_intdigest(b"port = 80\n")


def test_manifest_lists_hash_size_and_mode_and_is_written_with_the_files(
    node: Node, kv: KV
) -> None:
    node.write("run.sh", "echo\n", 0o755)
    assert node.run("push").exit_code == 0
    tree = kv.tree(node.prefix)
    manifest = kv.manifest(node.prefix)
    assert manifest["revision"] == 1
    assert manifest["paths"] == ["run.sh"]
    assert manifest["hashes"] == xxhash.xxh3_64_hexdigest(b"echo\n")
    assert manifest["sizes"] == [5]
    assert manifest["modes"] == [0o755]
    # One transaction: the file and the head that commits it share one ModifyIndex.
    assert tree[f"{node.prefix}/run.sh"]["index"] == kv.head(node.prefix)["index"]
    # Nothing but files under the prefix.
    assert sorted(tree) == [f"{node.prefix}/run.sh"]


def test_consul_kv_get_reads_the_value_as_it_is(node: Node, consul_bin: str, agent: Any) -> None:
    node.write("motd", "hello fleet\n")
    assert node.run("push").exit_code == 0
    out = subprocess.run(
        [consul_bin, "kv", "get", f"-http-addr={agent.addr}", f"{node.prefix}/motd"],
        capture_output=True,
        check=True,
    )
    assert out.stdout == b"hello fleet\n\n" or out.stdout == b"hello fleet\n"


def test_delete_removes_exactly_that_key_not_its_string_prefix_siblings(node: Node, kv: KV) -> None:
    for name in ("cfg", "cfg.bak", "cfgx/inner", "keep"):
        node.write(name, name)
    assert node.run("push").exit_code == 0
    (node.root / "cfg").unlink()
    result = node.run("push")
    assert result.exit_code == 0, result.output
    assert sorted(kv.files(node.prefix)) == ["cfg.bak", "cfgx/inner", "keep"]


def test_a_push_overtaken_before_its_commit_loses_the_check_and_set_and_plans_again(
    make_node: Any, kv: KV
) -> None:

    a, b = make_node("a"), make_node("b")
    a.write("f", "1")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    a.write("f", "from a")
    b.write("g", "from b")
    seen: list[dict[str, bytes]] = []

    def before(request: httpx.Request) -> None:
        if not seen and is_write_txn(request):
            # b's push lands after a read the tree and before a's transaction reaches Consul.
            assert b.run("push").exit_code == 0
            seen.append({})
        elif len(seen) == 1:
            seen.append(kv.files(a.prefix))  # what Consul holds once a's first write answered

    transport = RecordingTransport(before)
    run = library_run(a, transport)
    outcome = push.push(run)
    run.client.close()
    assert 409 in transport.statuses
    assert seen[1] == {"f": b"1", "g": b"from b"}  # nothing of a's refused transaction landed
    assert kv.files(a.prefix) == {"f": b"from a", "g": b"from b"}
    assert kv.manifest(a.prefix)["paths"] == ["f", "g"]
    assert outcome.left_to_pull == 1
    assert a.run("pull").exit_code == 0
    assert a.files() == {"f": b"from a", "g": b"from b"}


def test_a_push_of_up_to_59_keys_is_one_transaction_with_its_commit_and_no_lock(
    node: Node, kv: KV
) -> None:

    node.write("seed", "an earlier push\n")
    assert node.run("push").exit_code == 0
    for i in range(59):
        node.write(f"d{i % 7}/f{i}", f"content {i}\n")
    transport = RecordingTransport()
    run = library_run(node, transport)
    outcome = push.push(run)
    run.client.close()
    assert len(outcome.actions) == 59
    writes = [t for t in transport.txns() if any(op["KV"]["Verb"] == "set" for op in t)]
    assert len(writes) == 1
    assert len(writes[0]) == 64
    assert writes[0][0]["KV"] == {"Verb": "check-not-exists", "Key": lock_key(node.prefix)}
    assert writes[0][-1]["KV"]["Key"] == f"{node.prefix}.fileconsul/head"
    assert writes[0][-1]["KV"]["Verb"] == "cas"
    assert not [p for _, p, _ in transport.requests if p.startswith("/v1/session/")]
    assert len(kv.files(node.prefix)) == 60


def test_a_larger_push_goes_in_batches_that_check_the_head_under_the_lock(
    node: Node, kv: KV
) -> None:

    node.write("seed", "an earlier push\n")
    assert node.run("push").exit_code == 0
    for i in range(300):
        node.write(f"d{i % 10}/f{i:03}", f"content {i}\n" * 20)
    transport = RecordingTransport()
    run = library_run(node, transport)
    outcome = push.push(run)
    run.client.close()
    assert len(outcome.actions) == 300
    paths = [(m, p) for m, p, _ in transport.requests]
    acquire = paths.index(("PUT", f"/v1/kv/{lock_key(node.prefix)}"))
    destroy = next(i for i, (m, p) in enumerate(paths) if p.startswith("/v1/session/destroy"))
    txn_positions = [
        i
        for i, (_, path, body) in enumerate(transport.requests)
        if path == "/v1/txn" and b'"set"' in body
    ]
    writes = [t for t in transport.txns() if any(op["KV"]["Verb"] == "set" for op in t)]
    assert len(writes) >= 5
    assert all(len(t) <= 64 for t in writes)
    assert all(
        t[0]["KV"]
        == {
            "Verb": "check-index",
            "Key": f"{node.prefix}.fileconsul/head",
            "Index": t[0]["KV"]["Index"],
        }
        for t in writes
    )
    assert acquire < min(txn_positions)
    assert max(txn_positions) < destroy
    assert len(kv.files(node.prefix)) == 301
    assert httpx.get(f"{kv.url}/v1/kv/{lock_key(node.prefix)}").status_code == 404


def test_a_push_that_another_push_overtakes_before_its_lock_plans_again(
    make_node: Any, kv: KV
) -> None:

    a, b = make_node("a"), make_node("b")
    a.write("seed", "s\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    for i in range(70):
        a.write(f"d/f{i:02}", f"a {i}\n")
    b.write("from-b", "b\n")
    overtaken: list[bool] = []

    def before(request: httpx.Request) -> None:
        # b's push lands after a read the remote tree and before a holds the lock.
        if not overtaken and request.url.path == f"/v1/kv/{lock_key(a.prefix)}":
            assert b.run("push").exit_code == 0
            overtaken.append(True)

    run = library_run(a, RecordingTransport(before))
    outcome = push.push(run)
    run.client.close()
    assert overtaken
    assert len(outcome.actions) == 70
    assert outcome.left_to_pull == 1
    files = kv.files(a.prefix)
    assert len(files) == 72
    assert files["from-b"] == b"b\n"
    assert kv.manifest(a.prefix)["paths"] == sorted(files)
    assert a.run("pull").exit_code == 0
    assert a.files() == files


def test_a_held_lock_makes_push_wait_and_then_exit_4(node: Node, kv: KV, agent: Any) -> None:
    import httpx

    node.write("f", "1")
    # No lock delay: once it is destroyed, the next push takes the lock at once.
    lease = {"TTL": "30s", "LockDelay": "0s"}
    session = httpx.put(f"{agent.url}/v1/session/create", json=lease).json()["ID"]
    try:
        kv.put(lock_key(node.prefix), b"someone", acquire=session)
        result = node.run("push", "--lock-wait", "0.5")
        assert result.exit_code == 4
        assert "held" in result.stderr
        assert kv.files(node.prefix) == {}
    finally:
        httpx.put(f"{agent.url}/v1/session/destroy/{session}")
    assert node.run("push").exit_code == 0


def test_a_push_that_died_midway_is_ignored_by_pulls_and_undone_by_the_next_push(
    make_node: Any, kv: KV
) -> None:
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    committed = {f"d/f{i:03}": f"committed {i}\n".encode() * 200 for i in range(150)}
    for rel, data in committed.items():
        a.write(rel, data)
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    for rel in committed:
        a.write(rel, rel.encode() + b" changed\n" * 300)
    a.write("added", "new file\n")
    # Dies once its kept contents, its record and two batches of files were written.
    killed = with_fault(a, "kill:3", "push", "--node", "crashing-node")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    raw = kv.files(a.prefix)
    changed = [rel for rel in committed if raw[rel] != committed[rel]]
    assert 0 < len(changed) < len(committed)  # raw readers see a mixed tree meanwhile
    result = b.run("pull")
    assert result.exit_code == 0, result.output
    assert b.files() == committed
    assert "Already up-to-date." in result.stdout
    assert "written by a push from crashing-node" in result.stderr
    assert "never committed (revision 2)" in result.stderr
    # Another node's push undoes the dead push first, then commits its own change.
    assert c.run("pull").exit_code == 0
    c.write("from-c", "c\n")
    result = c.run("push")
    assert result.exit_code == 0, result.output
    assert kv.files(a.prefix) == {**committed, "from-c": b"c\n"}
    assert kv.head(a.prefix)["revision"] == 2
    assert not [k for k in kv.meta(a.prefix) if "/blobs/0000000002/" in k]
    # a's own push goes through the second time, on top of c's.
    assert a.run("push").exit_code == 0
    assert a.run("pull").exit_code == 0
    assert b.run("pull").exit_code == 0
    assert b.files() == a.files() == kv.files(a.prefix)
    assert kv.files(a.prefix)["added"] == b"new file\n"
    assert kv.head(a.prefix)["revision"] == 3


def test_a_pull_waits_for_a_push_under_way(make_node: Any, kv: KV, agent: Any) -> None:
    import httpx

    a, b = make_node("a"), make_node("b")
    a.write("f", "committed")
    assert a.run("push").exit_code == 0
    # Someone else holds the push lock and has written a value after the commit.
    session = httpx.put(f"{agent.url}/v1/session/create", json={"TTL": "30s"}).json()["ID"]
    kv.put(lock_key(a.prefix), b"pusher", acquire=session)
    kv.txn_set({f"{a.prefix}/new": b"half-written"})
    result = b.run("pull", "--lock-wait", "0.5")
    assert result.exit_code == 4
    assert "held" in result.stderr
    assert b.files() == {}
    httpx.put(f"{agent.url}/v1/session/destroy/{session}")
    # The lock is free and no push left a record: the value is another tool's, and pulled.
    result = b.run("pull")
    assert result.exit_code == 0, result.output
    assert b.files() == {"f": b"committed", "new": b"half-written"}


def test_a_value_at_the_limit_round_trips_and_one_byte_more_is_refused_whole(
    make_node: Any, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    big = os.urandom(512 * 1024)
    a.write("small", "s")
    a.write("big", big)
    result = a.run("push")
    assert result.exit_code == 0, result.output
    assert kv.files(a.prefix)["big"] == big
    assert b.run("pull").exit_code == 0
    assert b.read("big") == big
    before = kv.tree(a.prefix)
    a.write("small", "changed")
    a.write("too-big", os.urandom(512 * 1024 + 1))
    result = a.run("push")
    assert result.exit_code == 5
    assert "files over Consul's 524288-byte value limit: too-big is 524289 bytes" in result.stderr
    assert kv.tree(a.prefix) == before


def test_a_push_killed_before_its_head_with_a_large_replaced_value_is_undone(
    make_node: Any, kv: KV
) -> None:
    a, c = make_node("a"), make_node("c")
    committed = {
        "big": os.urandom(450_000),
        **{f"s/{i:02}": f"small {i}\n".encode() for i in range(70)},
    }
    for rel, data in committed.items():
        a.write(rel, data)
    assert a.run("push").exit_code == 0
    assert c.run("pull").exit_code == 0
    for rel in committed:
        a.write(rel, os.urandom(450_000) if rel == "big" else b"changed\n")
    killed = with_fault(a, "kill-before-head", "push")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert kv.files(a.prefix)["big"] != committed["big"]  # raw readers see the dead push
    c.write("from-c", "c\n")
    result = c.run("push")
    assert result.exit_code == 0, result.output
    assert kv.files(a.prefix) == {**committed, "from-c": b"c\n"}
    assert kv.head(a.prefix)["revision"] == 2


def test_a_push_after_a_pusher_died_holding_the_lock_goes_within_the_default_wait(
    make_node: Any, kv: KV
) -> None:
    a, c = make_node("a"), make_node("c")
    a.write("seed", "s\n")
    assert a.run("push").exit_code == 0
    assert c.run("pull").exit_code == 0
    for i in range(200):
        a.write(f"d/f{i:03}", f"a {i}\n")
    # Its session is left to Consul: it ends at most twice its TTL after the last renewal.
    killed = with_fault(a, "kill:2", "push", end_sessions=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    died = time.monotonic()
    c.write("from-c", "c\n")
    result = c.run("push")  # the default --lock-wait, 30 s
    assert result.exit_code == 0, result.output
    # The lock is free 20 s (twice the session's TTL) after the dead pusher's last renewal:
    # a margin under the default wait, not a race with it.
    assert time.monotonic() - died < 25
    assert kv.files(a.prefix)["from-c"] == b"c\n"
