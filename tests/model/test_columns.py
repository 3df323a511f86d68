"""The column codec of manifests, records and caches."""

from __future__ import annotations

import pytest

from fileconsul.model import columns
from fileconsul.model.facts import FileInfo
from fileconsul.model.manifest import FILE_COLUMNS
from tests.model.values import info


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
