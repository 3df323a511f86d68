"""Hostile keys and local traps: nothing is ever written outside the basepath."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import xxhash

from tests.conftest import KV, Node, RecordingTransport, library_run
from tests.processes import fileconsul_args, wait_until

UNSAFE_SUFFIXES = [
    "../escape",
    "a/../../escape",
    "..",
    "./dot",
    "/leading",
    "a//b",
    "back\\slash",
    "folder/",
    "",
    "x" * 3000,
    "a/" + "y" * 300,
]


def snapshot(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.mark.parametrize("suffix", UNSAFE_SUFFIXES, ids=lambda s: repr(s)[:30])
def test_unsafe_keys_planted_through_txn_are_skipped_and_reported(
    suffix: str, make_node: Any, kv: KV, tmp_path: Path
) -> None:
    node: Node = make_node("inner/node")
    outside = snapshot(tmp_path)
    kv.txn_set({f"{node.prefix}/safe.txt": b"safe", f"{node.prefix}/{suffix}": b"evil"})
    result = node.run("pull")
    assert result.exit_code == 5, result.output
    assert "skipped" in result.stderr
    assert node.files() == {"safe.txt": b"safe"}
    after = snapshot(tmp_path)
    after.pop("inner/node/safe.txt")
    assert {k: v for k, v in after.items() if "/.fileconsul/" not in k} == {
        k: v for k, v in outside.items() if "/.fileconsul/" not in k
    }
    status = node.run("status")
    assert status.exit_code == 5
    assert "skipped unsafe key" in status.stderr
    assert "Refused (a push or pull would stop on these):" in status.stdout


def test_control_characters_are_refused_by_consul_and_by_fileconsul(node: Node, kv: KV) -> None:
    from urllib.parse import quote

    import httpx

    for name in ("a\nb", "tab\there"):
        planted = httpx.put(f"{kv.url}/v1/kv/{node.prefix}/{quote(name)}", content=b"x")
        assert planted.status_code == 400, planted.text
        node.write(name, "x")
    result = node.run("push")
    assert result.exit_code == 5
    assert "control character in name" in result.stderr
    assert kv.files(node.prefix) == {}


@pytest.mark.parametrize(
    "name", ["per%cent", "what?", "hash#tag", "with space", "ünïcödé/日本", "Case", "case"]
)
def test_odd_but_safe_names_round_trip(name: str, make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    a.write(name, name)
    assert a.run("push").exit_code == 0
    assert kv.files(a.prefix) == {name: name.encode()}
    assert b.run("pull").exit_code == 0
    assert b.read(name) == name.encode()


def test_pull_never_writes_through_a_symlinked_directory(
    make_node: Any, kv: KV, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    node: Node = make_node("n")
    (node.root / "conf").symlink_to(outside)
    kv.txn_set({f"{node.prefix}/conf/evil": b"evil", f"{node.prefix}/ok": b"ok"})
    result = node.run("pull")
    assert result.exit_code == 5, result.output
    assert list(outside.iterdir()) == []
    assert (node.root / "ok").read_bytes() == b"ok"
    assert "conf" in result.stderr


def test_pull_never_replaces_a_symlinked_file(make_node: Any, kv: KV, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("precious")
    node: Node = make_node("n")
    (node.root / "f").symlink_to(target)
    kv.txn_set({f"{node.prefix}/f": b"evil"})
    result = node.run("pull")
    assert result.exit_code == 5
    assert target.read_text() == "precious"
    assert (node.root / "f").is_symlink()


def test_a_key_equal_to_the_prefix_is_skipped(node: Node, kv: KV) -> None:
    kv.txn_set({node.prefix: b"x", f"{node.prefix}/": b"folder", f"{node.prefix}/ok": b"ok"})
    result = node.run("pull")
    assert result.exit_code == 5
    assert node.files() == {"ok": b"ok"}


def test_a_committed_value_that_does_not_match_its_hash_is_never_written(
    make_node: Any, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "good")
    a.write("g", "fine")
    assert a.run("push").exit_code == 0
    # The value replaced, then the head rewritten (the same tree, another message), so that
    # the bad value counts as committed.
    kv.txn_set({f"{a.prefix}/f": b"evil"}, flags=xxhash.xxh3_64_intdigest(b"good"))
    kv.rewrite_head(a.prefix, message="tampered")
    result = b.run("pull")
    assert result.exit_code == 7, result.output
    assert "never matched its hash" in result.stderr
    assert b.files() == {}


def test_a_corrupt_manifest_is_reported_and_the_values_read_instead(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "good")
    assert a.run("push").exit_code == 0
    kv.txn_set({f"{a.prefix}.fileconsul/manifests/0000000001": b"\x78\x9c truncated"})
    result = b.run("pull")
    assert result.exit_code == 0, result.output
    assert "manifest" in result.stderr
    assert "corrupt" in result.stderr
    assert b.files() == {"f": b"good"}
    a.write("g", "more")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    assert b.files() == {"f": b"good", "g": b"more"}
    c = make_node("c")
    result = c.run("pull")
    assert "corrupt" not in result.stderr
    assert c.files() == b.files()


def without_root_privileges(args: list[str]) -> list[str]:
    """`args` run so that file permissions apply: as root, without the capabilities that let
    root read any file (DAC override); as anyone else, as they are."""
    if os.geteuid() != 0:
        return args
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *args]


def test_an_unreadable_local_file_refuses_the_push(node: Node, kv: KV) -> None:
    node.write("fine", "f")
    node.write("secret", "s").chmod(0)
    args = [sys.executable, "-m", "fileconsul", "push", "--addr", node.addr]
    args += ["--prefix", node.prefix, "--basepath", str(node.root)]
    result = subprocess.run(
        without_root_privileges(args), capture_output=True, text=True, check=False
    )
    assert result.returncode == 5, result.stderr
    assert "cannot read secret (Permission denied)" in result.stderr
    assert kv.files(node.prefix) == {}


def test_a_local_name_that_cannot_be_a_key_refuses_the_push(node: Node, kv: KV) -> None:
    node.write("fine", "f")
    (node.root / "bad\\name").write_text("b")
    result = node.run("push")
    assert result.exit_code == 5
    assert (
        "file names that cannot be Consul keys: 'bad\\\\name' (backslash in name)" in result.stderr
    )
    assert kv.files(node.prefix) == {}


def test_an_empty_tree_pushes_nothing_and_pulls_nothing(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    assert a.run("status").exit_code == 0
    assert a.run("push").exit_code == 0
    assert kv.files(a.prefix) == {}
    assert b.run("pull").exit_code == 0
    assert b.files() == {}


def test_pull_leaves_no_temporary_files(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    for i in range(20):
        a.write(f"d/f{i}", str(i))
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    assert not [p for p in b.root.rglob("*") if ".fileconsul-tmp-" in p.name]


@pytest.mark.parametrize("content", [b"{not json", b'{"files": {"f": [1]}}', b"[]"])
def test_a_corrupt_local_record_is_a_clear_error(node: Node, content: bytes) -> None:
    node.write("f", "x")
    assert node.run("push").exit_code == 0
    (record,) = (node.root / ".fileconsul" / "records").iterdir()
    record.write_bytes(content)
    result = node.run("status")
    assert result.exit_code == 5
    assert "remove it" in result.stderr
    assert "Traceback" not in result.output


def test_odd_but_safe_keys_planted_through_txn_are_pulled(node: Node, kv: KV) -> None:
    names = ["per%cent", "what?", "hash#tag", "with space", "ünïcödé/日本", "Case", "case"]
    kv.txn_set({f"{node.prefix}/{name}": name.encode() for name in names})
    result = node.run("pull")
    assert result.exit_code == 0, result.output
    assert node.files() == {name: name.encode() for name in names}


def test_a_killed_pulls_staged_directory_is_removed_without_following_its_links(
    make_node: Any, kv: KV, tmp_path: Path
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("keep")
    a, b = make_node("a"), make_node("b")
    a.write("new/deep/f", "f")
    assert a.run("push").exit_code == 0
    # What a pull killed while staging a new directory leaves behind, plus a planted link.
    left = b.root / ".fileconsul-tmp-dead-0"
    (left / "deep").mkdir(parents=True)
    (left / "deep" / "f").write_text("half")
    (left / "link").symlink_to(precious)
    result = b.run("pull")
    assert result.exit_code == 0, result.output
    assert b.files() == {"new/deep/f": b"f"}
    assert not left.exists()
    assert (precious / "keep").read_text() == "keep"


def test_a_directory_that_appears_during_a_pull_is_never_overwritten(make_node: Any) -> None:
    import httpx

    from fileconsul.commands import pull
    from fileconsul.errors import ConflictError

    a, b = make_node("a"), make_node("b")
    for i in range(100):  # two batches of reads
        a.write(f"new/deep/f{i:03}", "pulled")
    a.write("top", "pulled")
    assert a.run("push").exit_code == 0
    reads: list[bool] = []

    def meanwhile(request: httpx.Request) -> None:
        # Before the second batch is read: once the first is staged (its temporary copy of
        # `new` exists), someone creates `new` for real.
        if b'"Verb":"get"' not in request.read():
            return
        reads.append(True)
        if len(reads) == 2:
            wait_until(lambda: bool(list(b.root.glob(".fileconsul-tmp-*"))), what="staging")
            (b.root / "new").mkdir()
            (b.root / "new" / "mine").write_text("local")

    run = library_run(b, RecordingTransport(meanwhile))
    with pytest.raises(ConflictError, match="new changed locally during the pull") as caught:
        pull.pull(run)
    run.client.close()
    assert caught.value.exit_code == 4
    assert b.files() == {"new/mine": b"local"}
    assert not [p for p in b.root.rglob("*") if ".fileconsul-tmp-" in p.name]


def test_new_directories_are_renamed_in_whole_with_their_modes(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    b.write("old/kept", "kept")
    a.write("old/kept", "kept")
    a.write("old/new/x", "x", 0o755)
    a.write("fresh/one/two/y", "y", 0o600)
    a.write("z", "z")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    assert b.files() == a.files()
    for rel in ("old/new/x", "fresh/one/two/y", "z"):
        assert (b.root / rel).stat().st_mode & 0o777 == (a.root / rel).stat().st_mode & 0o777
    assert not [p for p in b.root.rglob("*") if ".fileconsul-tmp-" in p.name]


def test_a_zlib_bomb_in_the_history_costs_no_memory_and_is_corrupt(make_node: Any, kv: KV) -> None:
    import zlib

    a = make_node("a")
    a.write("f", "1\n")
    assert a.run("push").exit_code == 0
    a.write("f", "2\n")
    assert a.run("push").exit_code == 0
    # About 390 KB, one value, made a piece at a time: a child process forked from a test
    # that held 400 MB would count them in its peak.
    deflate = zlib.compressobj(9)
    bomb = deflate.compress(b"[") + b"".join(deflate.compress(b" " * 1_000_000) for _ in range(400))
    bomb += deflate.flush()
    meta = f"{a.prefix}.fileconsul"
    kv.put(f"{meta}/manifests/0000000002", bomb)
    kv.put(f"{meta}/log/0000000002", bomb)
    fresh = make_node("fresh")
    for node, command, code in ((a, "log", 7), (fresh, "pull", 7), (fresh, "status", 7)):
        process = subprocess.Popen(
            fileconsul_args(node, command), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert process.stderr is not None
        with process.stderr:
            err = process.stderr.read().decode()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        assert process.returncode == code, (command, err)
        assert "decompresses past" in err or "corrupt" in err
        assert usage.ru_maxrss < 150 * 1024, command  # kilobytes
