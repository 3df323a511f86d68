"""The first push into an empty prefix, sent while the scan is still reading the tree: the
same keys, manifest and record as any push, and a refused or failed one leaves the prefix
empty, as it was."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest

from fileconsul import tree
from fileconsul.errors import InvalidInput
from tests.conftest import KV, Node, RecordingTransport, library_run


def fill(node: Node, count: int) -> None:
    for i in range(count):
        node.write(f"d{i % 7}/sub{i % 3}/f{i:04}", f"content {i}\n" * (i % 50))


def counting_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many files the scan has hashed so far, as a one-item list."""
    hashed = [0]
    real = tree._hash_stable

    def counted(*args: Any) -> Any:
        hashed[0] += 1
        return real(*args)

    monkeypatch.setattr(tree, "_hash_stable", counted)
    return hashed


def test_a_first_push_sends_batches_while_the_scan_still_reads(
    node: Node, kv: KV, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fileconsul import sync

    fill(node, 600)
    hashed = counting_hashes(monkeypatch)
    seen_at_first_write: list[int] = []

    class Watching(RecordingTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if not seen_at_first_write and b'"Verb":"set"' in request.read():
                seen_at_first_write.append(hashed[0])
            return super().handle_request(request)

    transport = Watching()
    run = library_run(node, transport)
    outcome = sync.push(run)
    run.client.close()
    assert len(outcome.actions) == 600
    assert seen_at_first_write
    assert seen_at_first_write[0] < 600
    # The same result as any push: every key, a manifest of them all, an up-to-date record.
    assert kv.files(node.prefix) == node.files()
    assert httpx.get(f"{kv.url}/v1/kv/{node.prefix}.lock").status_code == 404
    status = json.loads(node.run("status", "--json").stdout)
    assert status["in_sync"] is True
    other = node.root.parent / "other"
    other.mkdir()
    result = node.run("pull", "--basepath", str(other))
    assert result.exit_code == 0, result.output
    for rel, data in node.files().items():
        assert (other / rel).read_bytes() == data


@pytest.mark.parametrize(
    ("bad", "code", "message"),
    [
        ("unsafe", 5, "cannot be a Consul key"),
        ("too-big", 5, "over Consul's 524288-byte value limit"),
    ],
)
def test_a_refused_first_push_leaves_the_prefix_empty(
    node: Node, kv: KV, bad: str, code: int, message: str
) -> None:
    fill(node, 400)
    if bad == "unsafe":
        node.write("d3/bad\\name", "x")
    else:
        node.write("d3/too-big", os.urandom(512 * 1024 + 1))
    result = node.run("push")
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert kv.tree(node.prefix) == {}
    assert httpx.get(f"{kv.url}/v1/kv/{node.prefix}.lock").status_code == 404


@pytest.mark.parametrize("failure", [InvalidInput, KeyboardInterrupt])
def test_a_first_push_that_fails_while_it_sends_leaves_the_prefix_empty(
    node: Node, kv: KV, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    from fileconsul import sync

    fill(node, 500)
    real = tree._hash_stable
    calls = [0]

    def failing(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] == 400:
            raise failure("the disk failed")
        return real(*args)

    monkeypatch.setattr(tree, "_hash_stable", failing)
    transport = RecordingTransport()
    run = library_run(node, transport)
    with pytest.raises(failure):
        sync.push(run)
    run.client.close()
    sets = [t for t in transport.txns() if any(op["KV"]["Verb"] == "set" for op in t)]
    assert sets  # batches were sent before the failure, and deleted after it
    assert kv.tree(node.prefix) == {}
    assert httpx.get(f"{kv.url}/v1/kv/{node.prefix}.lock").status_code == 404
    monkeypatch.undo()
    assert node.run("push").exit_code == 0
    assert kv.files(node.prefix) == node.files()


def test_a_first_push_overtaken_while_it_scans_plans_on_the_other_push(
    make_node: Any, kv: KV, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fileconsul import sync

    a, b = make_node("a"), make_node("b")
    fill(a, 200)
    a.write("d0/sub0/f0000", "a's version\n")
    b.write("d0/sub0/f0000", "b's version\n")
    b.write("from-b", "b\n")
    real_lock = sync.push_lock
    overtaken = [False]

    def late(run: Any) -> Any:
        # b's push lands after a found the prefix empty and before a holds the lock.
        if not overtaken[0]:
            overtaken[0] = True
            assert b.run("push").exit_code == 0
        return real_lock(run)

    monkeypatch.setattr(sync, "push_lock", late)
    result = a.run("push")
    assert overtaken[0]
    # Both added the same path with different content: a conflict, refused, nothing written.
    assert result.exit_code == 4, result.output
    assert "changed on both sides" in result.stderr
    assert kv.files(a.prefix) == {"d0/sub0/f0000": b"b's version\n", "from-b": b"b\n"}
    assert httpx.get(f"{kv.url}/v1/kv/{a.prefix}.lock").status_code == 404


def test_a_small_first_push_stays_one_transaction_without_a_lock(node: Node, kv: KV) -> None:
    from fileconsul import sync

    fill(node, 62)
    transport = RecordingTransport()
    run = library_run(node, transport)
    sync.push(run)
    run.client.close()
    writes = [t for t in transport.txns() if any(op["KV"]["Verb"] != "get-tree" for op in t)]
    assert len(writes) == 1
    assert not [p for _, p, _ in transport.requests if p.startswith("/v1/session/")]
    assert kv.files(node.prefix) == node.files()


def test_a_first_push_that_fails_after_its_manifest_landed_is_not_undone(
    node: Node, kv: KV, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fileconsul import sync
    from fileconsul.errors import ConsulUnavailable

    fill(node, 300)
    real = sync._send_and_commit

    def committed_then_lost(*args: Any) -> Any:
        real(*args)
        raise ConsulUnavailable("the connection dropped after the commit")

    monkeypatch.setattr(sync, "_send_and_commit", committed_then_lost)
    run = library_run(node)
    with pytest.raises(ConsulUnavailable):
        sync.push(run)
    run.client.close()
    assert kv.files(node.prefix) == node.files()
    monkeypatch.undo()
    other = node.root.parent / "other"
    other.mkdir()
    assert node.run("pull", "--basepath", str(other)).exit_code == 0
    assert len(list(other.rglob("f*"))) == 300
