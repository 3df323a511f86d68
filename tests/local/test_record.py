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
