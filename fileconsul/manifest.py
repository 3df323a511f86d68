"""The remote commit record (`<prefix>/.fileconsul/manifest`) and the file facts it lists."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import xxhash

from fileconsul.errors import InvalidInput

FORMAT = "fileconsul-manifest/1"
DEFAULT_MODE = 0o644


def content_hash(data: bytes) -> str:
    """The xxh3-64 of a file's bytes, as 16 hex digits; the key's Flags hold the same number."""
    return xxhash.xxh3_64_hexdigest(data)


def hash_to_flags(digest: str) -> int:
    return int(digest, 16)


class FileInfo(NamedTuple):
    """What the manifest and the local record know of one file (a tuple: tens of thousands
    are built per command)."""

    hash: str
    size: int
    mode: int = DEFAULT_MODE


Files = Mapping[str, FileInfo]


def columns(files: Files) -> dict[str, Any]:
    """`files` as columns (paths, concatenated hashes, sizes, modes), sorted by path."""
    paths = sorted(files)
    return {
        "paths": paths,
        "hashes": "".join(files[p].hash for p in paths),
        "sizes": [files[p].size for p in paths],
        "modes": [files[p].mode for p in paths],
    }


def from_columns(data: Mapping[str, Any]) -> dict[str, FileInfo]:
    """The files `columns` wrote; ValueError when a column is missing or malformed."""
    try:
        paths, hashes = data["paths"], data["hashes"]
        sizes, modes = data["sizes"], data["modes"]
        if not (len(paths) == len(sizes) == len(modes) and len(hashes) == 16 * len(paths)):
            raise ValueError("columns of different lengths")
        # Checked column by column: a per-entry check costs more than the rest of a status.
        bytes.fromhex(hashes)
        if not all(type(p) is str for p in paths):
            raise ValueError("a path is not a string")
        if not all(type(n) is int and n >= 0 for n in sizes):
            raise ValueError("a size is not a whole number")
        if not all(type(m) is int and 0 <= m <= 0o7777 for m in modes):
            raise ValueError("a mode is out of range")
        return {
            path: FileInfo(hashes[16 * i : 16 * i + 16], sizes[i], modes[i])
            for i, path in enumerate(paths)
        }
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed columns: {exc}") from exc


def encode(files: Files, *, max_size: int) -> bytes:
    """The manifest's value: zlib-compressed columnar JSON; InvalidInput past `max_size`.

    Columns compress far better than one record per path: 10,000 paths take about a third
    of a 512 KiB value.
    """
    body = {"format": FORMAT, **columns(files)}
    value = zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)
    if len(value) > max_size:
        raise InvalidInput(
            f"the manifest for {len(files)} files takes {len(value)} bytes, over Consul's "
            f"{max_size}-byte value limit; split the tree over several prefixes"
        )
    return value


def decode(value: bytes) -> dict[str, FileInfo]:
    """Parse a manifest value; ValueError when it is corrupt, truncated or of another format."""
    try:
        data = json.loads(zlib.decompress(value))
    except (zlib.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable manifest: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a fileconsul manifest")
    return from_columns(data)
