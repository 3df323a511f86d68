"""The pure rules, without an agent: the remote tree from entries, the local record, the
column codec, the scan, and rendering."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fileconsul import columns, history, manifest, remote, render, scan, state
from fileconsul.consul import KVEntry
from fileconsul.errors import InvalidInput
from fileconsul.fileinfo import FileInfo, content_hash, hash_to_flags
from fileconsul.keys import log_key
from fileconsul.manifest import FILE_COLUMNS, digest
from fileconsul.plan import plan

P = "p"


def info(data: bytes, mode: int = 0o644) -> FileInfo:
    return FileInfo(content_hash(data), len(data), mode)


def entry(path: str, data: bytes, index: int, *, flags: int | None = None) -> KVEntry:
    own = hash_to_flags(content_hash(data)) if flags is None else flags
    return KVEntry(f"{P}/{path}", data, own, index)


def head_at(files: dict[str, FileInfo], revision: int, index: int) -> history.Head:
    commit = history.new_commit(
        revision, [], files, digest(files), node="n", message="", rollback_of=None
    )
    return replace(history.new_head(commit, keep=10), index=index)


def journal(revision: int, changes: list[history.Change]) -> KVEntry:
    commit = history.new_commit(revision, changes, {}, "0" * 16, node="dead-node", message="")
    return KVEntry(log_key(P, revision), commit.encode(max_size=1 << 20), 0, 99)


# -- the remote tree from entries -----------------------------------------------------------


def test_committed_values_are_the_tree_with_the_manifests_modes() -> None:
    files = {"a": info(b"1", 0o755), "d/b": info(b"2")}
    tree = remote.from_entries(
        P, [entry("a", b"1", 10), entry("d/b", b"2", 9)], head_at(files, 1, 10), files
    )
    assert tree.files == files
    assert tree.commit_index == 10
    assert (tree.corrupt, tree.uncommitted, tree.adopt, tree.unsafe) == ([], [], set(), [])


def test_a_committed_value_that_contradicts_the_commit_is_corrupt_and_keeps_the_claim() -> None:
    files = {"a": info(b"1")}
    tree = remote.from_entries(P, [entry("a", b"tampered", 8)], head_at(files, 1, 10), files)
    assert tree.files == files
    assert tree.corrupt == [("a", "its value does not match the committed hash")]
    assert "a" not in tree.values


def test_values_of_a_push_that_left_a_record_and_died_are_uncommitted() -> None:
    files = {"a": info(b"1"), "gone": info(b"g")}
    changes = [
        history.Change("a", "modified", info(b"1"), info(b"new")),
        history.Change("b", "added", None, info(b"added")),
        history.Change("gone", "deleted", info(b"g"), None),
    ]
    entries = [entry("a", b"new", 11), entry("b", b"added", 11), journal(2, changes)]
    tree = remote.from_entries(P, entries, head_at(files, 1, 10), files)
    assert tree.files == files
    assert sorted(tree.uncommitted) == ["a", "b"]
    assert tree.dead_push is not None
    assert tree.dead_push.node == "dead-node"
    # The committed contents are read where that push kept them.
    assert tree.sources == {
        "a": f"{P}.fileconsul/blobs/0000000002/{info(b'1').hash}",
        "gone": f"{P}.fileconsul/blobs/0000000002/{info(b'g').hash}",
    }


def test_a_value_written_after_the_commit_by_another_tool_is_taken_and_adopted() -> None:
    files = {"a": info(b"1", 0o755)}
    entries = [entry("a", b"put by hand", 12, flags=0), entry("x", b"new", 12, flags=0)]
    tree = remote.from_entries(P, entries, head_at(files, 1, 10), files)
    assert tree.files == {"a": info(b"put by hand", 0o755), "x": info(b"new")}
    assert tree.adopt == {"a", "x"}
    assert tree.values == {"a": b"put by hand", "x": b"new"}


def test_a_tree_without_a_head_is_read_from_its_values() -> None:
    tree = remote.from_entries(P, [entry("x", b"1", 3, flags=0), entry("y", b"2", 4)], None, {})
    assert tree.commit_index == 0
    assert tree.files == {"x": info(b"1"), "y": info(b"2")}
    assert tree.adopt == {"x"}


def test_a_first_format_tree_is_read_with_its_manifest() -> None:
    files = {"a": info(b"1", 0o700)}
    value = manifest.pack(
        {"format": manifest.LEGACY_FORMAT, **columns.encode(files, manifest.FILE_COLUMNS)},
        "manifest",
        1 << 20,
    )
    legacy = KVEntry(f"{P}/.fileconsul/manifest", value, hash_to_flags(content_hash(value)), 5)
    half = entry("b", b"half", 6)  # a first-format push that had not committed
    tree = remote.from_entries(P, [legacy, entry("a", b"1", 5), half], None, {})
    assert tree.files == files
    assert tree.legacy_index == 5
    assert tree.uncommitted == ["b"]


def test_a_prefix_whose_files_are_all_gone_is_wiped() -> None:
    files = {"a": info(b"1")}
    assert remote.from_entries(P, [], head_at(files, 1, 10), files).wiped
    assert not remote.from_entries(P, [entry("a", b"1", 9)], head_at(files, 1, 10), files).wiped


def test_unsafe_and_reserved_keys_are_never_files() -> None:
    entries = [
        KVEntry(f"{P}/", b"folder", 0, 1),
        KVEntry(f"{P}/a/../b", b"x", 0, 1),
        KVEntry(f"{P}/.fileconsul-tmp-x", b"x", 0, 1),
        KVEntry(f"{P}/sub.fileconsul/head", b"x", 0, 1),
        entry("ok", b"fine", 1),
    ]
    tree = remote.from_entries(P, entries, None, {})
    assert tree.files == {"ok": info(b"fine")}
    assert [key for key, _ in tree.unsafe] == [
        f"{P}/",
        f"{P}/a/../b",
        f"{P}/.fileconsul-tmp-x",
        f"{P}/sub.fileconsul/head",
    ]
    assert "another fileconsul tree" in tree.unsafe[3][1]


# -- the column codec and the local record ----------------------------------------------------


def test_columns_round_trip_and_refuse_malformed_tables() -> None:
    files = {"b": info(b"2", 0o755), "a": info(b"1")}
    table = columns.encode(files, FILE_COLUMNS)
    assert table["paths"] == ["a", "b"]
    assert columns.decode(table, FILE_COLUMNS, FileInfo) == files
    for broken in (
        {**table, "sizes": [1]},
        {**table, "hashes": "zz" * 16},
        {**table, "modes": [0o644, 0o17777]},
        {**table, "paths": ["a", 2]},
        {k: v for k, v in table.items() if k != "modes"},
    ):
        with pytest.raises(ValueError, match=r"column|path|malformed|hex"):
            columns.decode(broken, FILE_COLUMNS, FileInfo)


def test_the_record_round_trips_and_a_corrupt_one_is_a_clear_error(tmp_path: Path) -> None:
    record = state.Record("team/app", 7, {"x": info(b"1", 0o700)})
    record.hash_cache = {"x": state.Cached(content_hash(b"1"), 1, 123, 456)}
    state.save(tmp_path, record)
    loaded = state.load(tmp_path, "team/app")
    assert (loaded.revision, loaded.files, loaded.exists) == (7, record.files, True)
    assert loaded.hash_cache == record.hash_cache
    assert not state.load(tmp_path, "other").exists
    (path,) = (tmp_path / ".fileconsul" / "records").iterdir()
    path.write_text('{"format": 2, "files": {"paths": ["x"]}}')
    with pytest.raises(InvalidInput, match="is corrupt"):
        state.load(tmp_path, "team/app")


def test_a_torn_hash_cache_is_an_empty_one(tmp_path: Path) -> None:
    record = state.Record("p", 1, {"x": info(b"1")}, hash_cache={})
    state.save(tmp_path, record)
    (cache,) = (tmp_path / ".fileconsul" / "cache").iterdir()
    cache.write_text('{"paths": ["x"], "hash')
    assert state.load(tmp_path, "p").hash_cache == {}


# -- the scan ---------------------------------------------------------------------------------


def old(path: Path) -> None:
    """Out of the racy-timestamp window, so that its hash may be cached."""
    os.utime(path, (time.time() - 10, time.time() - 10))


def test_scan_sees_files_modes_ignores_links_and_leftovers(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (tmp_path / "d" / "run.sh").chmod(0o755)
    (tmp_path / "skip.log").write_text("x")
    (tmp_path / ".fileconsulignore").write_text("*.log\n")
    (tmp_path / "link").symlink_to(tmp_path / "d")
    (tmp_path / "bad\\name").write_text("x")
    (tmp_path / ".fileconsul-tmp-dead-1").write_text("left by a killed pull")
    (tmp_path / ".fileconsul").mkdir()
    (tmp_path / ".fileconsul" / "lock").write_text("")
    result = scan.scan(tmp_path)
    assert sorted(result.files) == [".fileconsulignore", "d/run.sh"]
    assert result.files["d/run.sh"] == info(b"#!/bin/sh\n", 0o755)
    assert result.skipped == [("link", "symbolic link, not followed")]
    assert result.unsafe == [("bad\\name", "backslash in name")]
    assert result.leftovers == [".fileconsul-tmp-dead-1"]


def test_a_cached_hash_spares_reading_the_file_until_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    old(path)
    first = scan.scan(tmp_path)
    assert first.bytes_hashed == 1000
    again = scan.scan(tmp_path, first.hash_cache)
    assert again.bytes_hashed == 0
    assert again.files == first.files
    path.write_bytes(b"y" * 1000)
    changed = scan.scan(tmp_path, first.hash_cache)
    assert changed.bytes_hashed == 1000
    assert changed.files["f"] == info(b"y" * 1000)


def test_a_file_written_within_the_racy_window_is_not_cached(tmp_path: Path) -> None:
    (tmp_path / "fresh").write_text("just written")
    assert scan.scan(tmp_path).hash_cache == {}


def test_a_push_keeps_the_bytes_it_read_up_to_its_budget(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a" * 10)
    (tmp_path / "b").write_bytes(b"b" * 10)
    kept = scan.scan(tmp_path, keep_bytes=15).contents
    assert len(kept) == 1
    assert next(iter(kept.values())) in (b"a" * 10, b"b" * 10)


# -- rendering --------------------------------------------------------------------------------


def test_status_text_lists_each_direction_and_the_conflicts() -> None:
    base = {"m": info(b"1"), "c": info(b"1")}
    local = {"m": info(b"2"), "c": info(b"mine"), "new": info(b"n")}
    remote_files = {"m": info(b"1"), "c": info(b"theirs"), "r": info(b"r")}
    text = render.status_text(plan(local, base, remote_files))
    assert text.splitlines() == [
        "Changes to be pushed:",
        '  (use "fileconsul push" to send these to Consul)',
        "    modified:   m",
        "    added:      new",
        "Changes to be pulled:",
        '  (use "fileconsul pull" to apply these locally)',
        "    added:      r",
        "Conflicts:",
        '  (changed on both sides: see them with "fileconsul diff"; merge by hand, or keep',
        '   one side with "fileconsul push --force" (local) or "fileconsul pull --force")',
        "    c (local modified, remote modified)",
    ]
    report = render.status_json("p", plan(local, base, remote_files), revision=1, head=2)
    assert json.loads(json.dumps(report))["conflicts"] == [
        {"path": "c", "local": "modified", "remote": "modified"}
    ]
    assert render.status_text(plan({}, {}, {})) == "Everything up-to-date."
