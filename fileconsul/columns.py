"""One codec for tables keyed by path (the manifest, the local record, the hash cache, the
commit records): each field a column, hashes concatenated. Columns encode and compress far
better than one object per path, and decode faster."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

_Row = TypeVar("_Row")

HASH_DIGITS = 16


class Column(NamedTuple):
    name: str
    #: 16-hex-digit hashes, stored as one concatenated string.
    hashes: bool = False
    #: The largest whole number allowed (None: any non-negative one).
    most: int | None = None


def encode(rows: Mapping[str, Sequence[Any]], columns: Sequence[Column]) -> dict[str, Any]:
    """`rows` (path -> tuple with one value per column) as columns, sorted by path."""
    paths = sorted(rows)
    table: dict[str, Any] = {"paths": paths}
    for i, column in enumerate(columns):
        values = [rows[p][i] for p in paths]
        table[column.name] = "".join(values) if column.hashes else values
    return table


def decode(
    table: Mapping[str, Any], columns: Sequence[Column], row: Callable[..., _Row]
) -> dict[str, _Row]:
    """The rows `encode` wrote, each built by `row(*values)`; ValueError when a column is
    missing or malformed. Checked column by column: a check per row costs more than the rest
    of a status."""
    try:
        paths = table["paths"]
        if not isinstance(paths, list) or not all(type(p) is str for p in paths):
            raise ValueError("a path is not a string")
        count = len(paths)
        values = [_column(table[column.name], column, count) for column in columns]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed columns: {exc!r}") from exc
    return dict(zip(paths, (row(*fields) for fields in zip(*values, strict=True)), strict=True))


def _column(raw: Any, column: Column, count: int) -> list[Any]:
    if column.hashes:
        if not isinstance(raw, str) or len(raw) != HASH_DIGITS * count:
            raise ValueError(f"column {column.name} has the wrong length")
        bytes.fromhex(raw)
        return [raw[i : i + HASH_DIGITS] for i in range(0, len(raw), HASH_DIGITS)]
    if not isinstance(raw, list) or len(raw) != count:
        raise ValueError(f"column {column.name} has the wrong length")
    if not all(type(n) is int and n >= 0 for n in raw):
        raise ValueError(f"column {column.name} holds something other than a whole number")
    if column.most is not None and any(n > column.most for n in raw):
        raise ValueError(f"column {column.name} holds a number over {column.most}")
    return raw
