"""The remote tree from KV entries, without an agent: committed, corrupt, uncommitted, adopted,
headless, first-format, wiped, unsafe."""

from __future__ import annotations

from fileconsul.model import columns, manifest
from fileconsul.model.facts import content_hash, hash_to_flags
from fileconsul.model.records import Change
from fileconsul.model.tree import KVEntry, from_entries
from fileconsul.store.layout import content_key
from tests.model.values import P, entry, head_at, info, journal


def test_committed_values_are_the_tree_with_the_manifests_modes() -> None:
    files = {"a": info(b"1", 0o755), "d/b": info(b"2")}
    tree = from_entries(
        P, [entry("a", b"1", 10), entry("d/b", b"2", 9)], head_at(files, 1, 10), files
    )
    assert tree.files == files
    assert tree.commit_index == 10
    assert (tree.corrupt, tree.uncommitted, tree.adopt, tree.unsafe) == ((), (), frozenset(), ())


def test_a_committed_value_that_contradicts_the_commit_is_corrupt_and_keeps_the_claim() -> None:
    files = {"a": info(b"1")}
    tree = from_entries(P, [entry("a", b"tampered", 8)], head_at(files, 1, 10), files)
    assert tree.files == files
    assert tree.corrupt == (("a", "its value does not match the committed hash"),)
    assert "a" not in tree.values


def test_values_of_a_push_that_left_a_record_and_died_are_uncommitted() -> None:
    files = {"a": info(b"1"), "gone": info(b"g")}
    changes = [
        Change("a", "modified", info(b"1"), info(b"new")),
        Change("b", "added", None, info(b"added")),
        Change("gone", "deleted", info(b"g"), None),
    ]
    entries = [entry("a", b"new", 11), entry("b", b"added", 11)]
    tree = from_entries(P, entries, head_at(files, 1, 10), files, record=journal(2, changes))
    assert tree.files == files
    assert sorted(tree.uncommitted) == ["a", "b"]
    assert tree.dead_push is not None
    assert tree.dead_push.node == "dead-node"
    # The committed contents are read where that push kept them.
    assert {path: content_key(tree, path) for path in tree.set_aside} == {
        "a": f"{P}.fileconsul/blobs/0000000002/{info(b'1').hash}",
        "gone": f"{P}.fileconsul/blobs/0000000002/{info(b'g').hash}",
    }


def test_a_value_written_after_the_commit_by_another_tool_is_taken_and_adopted() -> None:
    files = {"a": info(b"1", 0o755)}
    entries = [entry("a", b"put by hand", 12, flags=0), entry("x", b"new", 12, flags=0)]
    tree = from_entries(P, entries, head_at(files, 1, 10), files)
    assert tree.files == {"a": info(b"put by hand", 0o755), "x": info(b"new")}
    assert tree.adopt == {"a", "x"}
    assert tree.values == {"a": b"put by hand", "x": b"new"}


def test_a_tree_without_a_head_is_read_from_its_values() -> None:
    tree = from_entries(P, [entry("x", b"1", 3, flags=0), entry("y", b"2", 4)], None, {})
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
    tree = from_entries(P, [entry("a", b"1", 5), half], None, {}, legacy=legacy)
    assert tree.files == files
    assert tree.legacy_index == 5
    assert tree.uncommitted == ("b",)


def test_a_prefix_whose_files_are_all_gone_is_wiped() -> None:
    files = {"a": info(b"1")}
    assert from_entries(P, [], head_at(files, 1, 10), files).wiped
    assert not from_entries(P, [entry("a", b"1", 9)], head_at(files, 1, 10), files).wiped


def test_unsafe_and_reserved_keys_are_never_files() -> None:
    entries = [
        KVEntry(f"{P}/", b"folder", 0, 1),
        KVEntry(f"{P}/a/../b", b"x", 0, 1),
        KVEntry(f"{P}/.fileconsul-tmp-x", b"x", 0, 1),
        KVEntry(f"{P}/sub.fileconsul/head", b"x", 0, 1),
        entry("ok", b"fine", 1),
    ]
    tree = from_entries(P, entries, None, {})
    assert tree.files == {"ok": info(b"fine")}
    assert [key for key, _ in tree.unsafe] == [
        f"{P}/",
        f"{P}/a/../b",
        f"{P}/.fileconsul-tmp-x",
        f"{P}/sub.fileconsul/head",
    ]
    assert "another fileconsul tree" in tree.unsafe[3][1]


# -- the column codec and the local record ----------------------------------------------------
