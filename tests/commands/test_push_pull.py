"""Push, pull and status end to end against a real agent: bytes, modes, the delete cap,
conflicts, dry runs, foreign writes, ignore rules and the local record."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import xxhash

from fileconsul.commands.status import Status
from fileconsul.commands.status import status as status_of
from tests.conftest import KV, Node, library_run


def test_push_then_pull_round_trips_bytes_and_the_executable_bit(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("bin/ntp", "#!/bin/sh\nexec ntpd\n", 0o755)
    a.write("config/service/ntp.json", '{"service": {"name": "ntp"}}\n', 0o644)
    a.write("blob.bin", bytes(range(256)) * 4, 0o600)
    a.write("empty", b"")
    assert a.run("push").exit_code == 0
    result = b.run("pull")
    assert result.exit_code == 0, result.output
    assert b.files() == a.files()
    for rel in ("bin/ntp", "config/service/ntp.json", "blob.bin", "empty"):
        mode_a = stat.S_IMODE((a.root / rel).stat().st_mode)
        assert stat.S_IMODE((b.root / rel).stat().st_mode) == mode_a
    assert (b.root / "bin/ntp").stat().st_mode & stat.S_IXUSR


def test_push_from_an_empty_directory_is_refused_and_consul_is_unchanged(
    make_node: Any, kv: KV
) -> None:
    a = make_node("a")
    for i in range(4):
        a.write(f"f{i}", str(i))
    assert a.run("push").exit_code == 0
    before = kv.tree(a.prefix)
    for i in range(4):
        (a.root / f"f{i}").unlink()
    result = a.run("push")
    assert result.exit_code == 5
    assert "refusing to delete 4 of 4 files in Consul" in result.stderr
    assert kv.tree(a.prefix) == before
    assert a.run("push", "--max-delete", "3").exit_code == 5
    assert a.run("push", "--max-delete", "4").exit_code == 0
    assert kv.files(a.prefix) == {}


def test_pull_that_would_delete_most_files_is_refused_and_the_tree_kept(
    make_node: Any, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    for i in range(4):
        a.write(f"f{i}", str(i))
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    for i in range(3):
        (a.root / f"f{i}").unlink()
    assert a.run("push", "--force").exit_code == 0
    result = b.run("pull")
    assert result.exit_code == 5
    assert "refusing to delete 3 of 4 files locally" in result.stderr
    assert sorted(b.files()) == ["f0", "f1", "f2", "f3"]
    assert b.run("pull", "--force").exit_code == 0
    assert sorted(b.files()) == ["f3"]


def test_dry_run_changes_neither_side(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("x", "1")
    result = a.run("push", "--dry-run")
    assert result.exit_code == 0
    assert "would push added: x" in result.stdout.replace("  ", " ")
    assert kv.tree(a.prefix) == {}
    assert a.run("push").exit_code == 0
    result = b.run("pull", "--dry-run")
    assert result.exit_code == 0
    assert b.files() == {}
    assert not (b.root / ".fileconsul" / "records").exists()


def test_first_pull_keeps_equal_files_and_refuses_different_ones(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("same", "1")
    a.write("differs", "theirs")
    assert a.run("push").exit_code == 0
    b.write("same", "1")
    b.write("differs", "mine")
    result = b.run("pull")
    assert result.exit_code == 4
    assert "differs" in result.stderr
    assert b.read("differs") == b"mine"
    assert b.run("pull", "--force").exit_code == 0
    assert b.read("differs") == b"theirs"
    assert b.run("status").exit_code == 0


def test_push_force_keeps_the_local_version(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "base")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    a.write("f", "from a")
    assert a.run("push").exit_code == 0
    b.write("f", "from b")
    assert b.run("push").exit_code == 4
    assert kv.files(a.prefix)["f"] == b"from a"
    assert b.run("push", "--force").exit_code == 0
    assert kv.files(a.prefix)["f"] == b"from b"


def test_pushes_from_two_nodes_merge_when_they_touch_different_files(
    make_node: Any, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("one", "1")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    a.write("two", "2")
    b.write("three", "3")
    assert a.run("push").exit_code == 0
    assert b.run("push").exit_code == 0
    assert kv.files(a.prefix) == {"one": b"1", "two": b"2", "three": b"3"}
    assert kv.manifest(a.prefix)["paths"] == ["one", "three", "two"]
    assert a.run("pull").exit_code == 0
    assert b.run("pull").exit_code == 0
    assert a.files() == b.files() == kv.files(a.prefix)


def test_a_tree_written_with_consul_kv_put_is_seen_pulled_and_adopted(
    make_node: Any, kv: KV, consul_bin: str, agent: Any
) -> None:
    a, b = make_node("a"), make_node("b")
    for key, value in (("app/a.conf", "a=1\n"), ("app/b.conf", "b=2\n")):
        subprocess.run(
            [consul_bin, "kv", "put", f"-http-addr={agent.addr}", f"{a.prefix}/{key}", value],
            check=True,
            capture_output=True,
        )
    status = json.loads(b.run("status", "--json").stdout)
    assert status["pull"] == [
        {"path": "app/a.conf", "change": "added"},
        {"path": "app/b.conf", "change": "added"},
    ]
    assert b.run("pull").exit_code == 0
    assert b.files() == {"app/a.conf": b"a=1\n", "app/b.conf": b"b=2\n"}
    # The next push adopts the tree: manifest written, hashes set in Flags.
    b.write("app/c.conf", "c=3\n")
    assert b.run("push").exit_code == 0
    tree = kv.tree(a.prefix)
    assert tree[f"{a.prefix}/app/a.conf"]["flags"] == xxhash.xxh3_64_intdigest(b"a=1\n")
    assert kv.manifest(a.prefix)["paths"] == ["app/a.conf", "app/b.conf", "app/c.conf"]
    # A later out-of-band edit is seen too.
    subprocess.run(
        [consul_bin, "kv", "put", f"-http-addr={agent.addr}", f"{a.prefix}/app/a.conf", "a=9\n"],
        check=True,
        capture_output=True,
    )
    assert b.run("pull").exit_code == 0
    assert b.read("app/a.conf") == b"a=9\n"


def test_unchanged_status_of_1000_files_downloads_no_file_contents(node: Node) -> None:
    settled = time.time() - 60
    for i in range(1000):
        path = node.write(f"d{i % 10}/sub{i % 3}/f{i:04}", os.urandom(4096))
        # Written a minute ago: a file modified within the last 100 ms may change again within
        # its timestamp's tick, so its hash is never cached (the flakiness this test once had).
        os.utime(path, (settled, settled))
    assert node.run("push").exit_code == 0
    assert node.run("status").exit_code == 0
    run = library_run(node)
    result = status_of(run)
    run.client.close()
    assert result.in_sync
    assert result.view.tree.fast
    assert result.view.local.bytes_hashed == 0
    # The manifest (compressed) plus a key listing; the tree itself is 4 MB.
    assert run.client.requests == 2
    assert run.client.bytes_received < 1000 * 4096 // 100


def test_ignore_rules_symlinks_and_fifos_are_not_synced(node: Node, kv: KV, tmp_path: Path) -> None:
    node.write(".fileconsulignore", "*.swp\nbuild/\n!keep.swp\n")
    node.write("a.swp", "x")
    node.write("keep.swp", "k")
    node.write("build/out", "o")
    node.write("real", "r")
    (node.root / "link").symlink_to(node.root / "real")
    (node.root / "dirlink").symlink_to(tmp_path)
    os.mkfifo(node.root / "fifo")
    result = node.run("push")
    assert result.exit_code == 0, result.output
    assert sorted(kv.files(node.prefix)) == [".fileconsulignore", "keep.swp", "real"]
    assert "skipped link: symbolic link, not followed" in result.stderr
    assert "skipped fifo: not a regular file" in result.stderr


def test_a_record_of_the_first_format_is_still_read(make_node: Any, kv: KV) -> None:
    a = make_node("a")
    a.write("f", "1")
    a.write("d/g", "2", 0o755)
    assert a.run("push").exit_code == 0
    (path,) = (a.root / ".fileconsul" / "records").iterdir()
    (cache_path,) = (a.root / ".fileconsul" / "cache").iterdir()
    new, cache = json.loads(path.read_bytes()), json.loads(cache_path.read_bytes())
    files = new["files"]
    old = {
        "format": 1,
        "prefix": new["prefix"],
        "revision": new["revision"],
        "files": {
            p: [files["hashes"][16 * i : 16 * i + 16], files["sizes"][i], files["modes"][i]]
            for i, p in enumerate(files["paths"])
        },
        "hash_cache": {
            p: [cache["stats"][3 * i : 3 * i + 3], cache["hashes"][16 * i : 16 * i + 16]]
            for i, p in enumerate(cache["paths"])
        },
    }
    path.write_text(json.dumps(old))
    cache_path.unlink()
    result = a.run("status")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("\nEverything up-to-date.\n")
    a.write("f", "changed")
    assert a.run("push").exit_code == 0
    assert json.loads(path.read_bytes())["format"] == 3
    assert kv.files(a.prefix)["f"] == b"changed"


def test_a_lost_or_torn_hash_cache_costs_a_rehash_and_nothing_else(make_node: Any) -> None:
    a = make_node("a")
    a.write("f", "1" * 1000)
    os.utime(a.root / "f", (1_700_000_000, 1_700_000_000))  # old enough to be cached
    assert a.run("push").exit_code == 0
    (cache,) = (a.root / ".fileconsul" / "cache").iterdir()

    def status() -> Status:
        run = library_run(a)
        try:
            return status_of(run)
        finally:
            run.client.close()

    assert status().view.local.bytes_hashed == 0
    cache.write_text('{"paths": ["f"], "sta')
    torn = status()
    assert torn.in_sync
    assert torn.view.local.bytes_hashed == 1000  # the one cost: the file is read again
    assert status().view.local.bytes_hashed == 0  # and the cache is whole again
    cache.unlink()
    a.write("f", "2")
    result = a.run("status")
    assert result.exit_code == 1
    assert "    modified:   f\n" in result.stdout
