"""The local record and its hash cache on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from fileconsul.errors import InvalidInput
from fileconsul.local import record as state
from fileconsul.model.facts import content_hash
from tests.model.values import info


def test_the_record_round_trips_and_a_corrupt_one_is_a_clear_error(tmp_path: Path) -> None:
    record = state.Record("team/app", 7, {"x": info(b"1", 0o700)})
    record.hash_cache = {"x": state.Cached(content_hash(b"1"), 1, 123, 124, 456)}
    state.save(tmp_path, record, cache=True)
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
    state.save(tmp_path, record, cache=True)
    (cache,) = (tmp_path / ".fileconsul" / "cache").iterdir()
    cache.write_text('{"paths": ["x"], "hash')
    assert state.load(tmp_path, "p").hash_cache == {}


def fresh_load(root: Path, prefix: str) -> state.Record:
    """The record as a new process reads it: from the files, not from what this one knows."""
    state._known.clear()
    return state.load(root, prefix)


def test_a_save_appends_what_changed_and_a_new_process_reads_the_same_record(
    tmp_path: Path,
) -> None:
    files = {f"f{i:04}": info(str(i).encode()) for i in range(2000)}
    record = state.Record("p", 1, dict(files))
    state.save(tmp_path, record, cache=False)
    snapshot = tmp_path / ".fileconsul" / "records" / "p.json"
    written = snapshot.read_bytes()
    for revision in range(2, 12):
        record = state.load(tmp_path, "p", cache=False)
        record.revision = revision
        record.advance([(f"f{revision:04}", info(b"changed")), (f"f{revision + 1000:04}", None)])
        state.save(tmp_path, record, cache=False)
    assert snapshot.read_bytes() == written  # the snapshot stands; the journal grew
    journal = snapshot.with_suffix(".journal")
    assert len(journal.read_bytes().splitlines()) == 10
    assert len(journal.read_bytes()) < len(written) // 20
    again = fresh_load(tmp_path, "p")
    assert (again.revision, again.files) == (record.revision, record.files)
    assert len(again.files) == 1990


def test_a_torn_journal_line_is_passed_over_and_folded_by_the_next_save(tmp_path: Path) -> None:
    record = state.Record("p", 1, {"a": info(b"1")})
    state.save(tmp_path, record, cache=False)
    record.revision, record.files["b"] = 2, info(b"2")
    state.save(tmp_path, record, cache=False)
    journal = tmp_path / ".fileconsul" / "records" / "p.journal"
    with journal.open("ab") as torn:
        torn.write(b'{"generation": 1, "revision": 3, "set": {"pa')  # a crash mid-append
    loaded = fresh_load(tmp_path, "p")
    assert (loaded.revision, sorted(loaded.files)) == (2, ["a", "b"])
    loaded.revision = 3
    state.save(tmp_path, loaded, cache=False)
    assert not journal.exists()
    assert fresh_load(tmp_path, "p").revision == 3


def test_a_journal_left_beside_a_newer_snapshot_is_not_replayed(tmp_path: Path) -> None:
    record = state.Record("p", 1, {"a": info(b"1")})
    state.save(tmp_path, record, cache=False)
    record.revision, record.files["a"] = 2, info(b"old change")
    state.save(tmp_path, record, cache=False)
    journal = tmp_path / ".fileconsul" / "records" / "p.journal"
    kept = journal.read_bytes()
    record.revision, record.files["a"] = 3, info(b"newest")
    state._snapshot(tmp_path, record, 2)  # folded; then a crash before the journal went:
    journal.write_bytes(kept)
    loaded = fresh_load(tmp_path, "p")
    assert (loaded.revision, loaded.files["a"]) == (3, info(b"newest"))
