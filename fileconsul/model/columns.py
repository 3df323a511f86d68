"""One codec for tables of rows (the manifest, the local record, the hash cache, the changes
of a commit): each field a column, hashes concatenated. Columns encode and compress far better
than one object per row, and decode faster."""

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


def encode_rows(rows: Sequence[Sequence[Any]], columns: Sequence[Column]) -> dict[str, Any]:
    """`rows` (tuples with one value per column) as columns, in their order."""
    table: dict[str, Any] = {}
    for i, column in enumerate(columns):
        values = [row[i] for row in rows]
        table[column.name] = "".join(values) if column.hashes else values
    return table


def decode_rows(
    table: Mapping[str, Any], columns: Sequence[Column], count: int, row: Callable[..., _Row]
) -> list[_Row]:
    """The `count` rows `encode_rows` wrote, each built by `row(*values)`; ValueError when a
    column is missing or malformed. Checked column by column: a check per row costs more than
    the rest of a status."""
    try:
        values = [_column(table[column.name], column, count) for column in columns]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed columns: {exc!r}") from exc
    return [row(*fields) for fields in zip(*values, strict=True)] if values else []


def encode(rows: Mapping[str, Sequence[Any]], columns: Sequence[Column]) -> dict[str, Any]:
    """`rows` keyed by path, as a "paths" column and one column per field, sorted by path."""
    paths = sorted(rows)
    return {"paths": paths, **encode_rows([rows[p] for p in paths], columns)}


def decode(
    table: Mapping[str, Any], columns: Sequence[Column], row: Callable[..., _Row]
) -> dict[str, _Row]:
    """The rows `encode` wrote, by path."""
    paths = paths_of(table)
    return dict(zip(paths, decode_rows(table, columns, len(paths), row), strict=True))


def paths_of(table: Mapping[str, Any]) -> list[str]:
    paths = table.get("paths") if isinstance(table, Mapping) else None
    if not isinstance(paths, list) or not all(type(p) is str for p in paths):
        raise ValueError("malformed columns: a path is not a string")
    return paths


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
