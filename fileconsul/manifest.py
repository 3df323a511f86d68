"""The remote commit record (`<prefix>/.fileconsul/manifest`) and the file facts it lists."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import xxhash

from fileconsul.errors import InvalidInput

FORMAT = "fileconsul-manifest/1"
DEFAULT_MODE = 0o644


def content_hash(data: bytes) -> str:
    """The xxh3-64 of a file's bytes, as 16 hex digits; the key's Flags hold the same number."""
    return xxhash.xxh3_64_hexdigest(data)


def hash_to_flags(digest: str) -> int:
    return int(digest, 16)


@dataclass(frozen=True)
class FileInfo:
    hash: str
    size: int
    mode: int = DEFAULT_MODE

    def to_json(self) -> list[object]:
        return [self.hash, self.size, self.mode]


Files = Mapping[str, FileInfo]


def files_to_json(files: Files) -> dict[str, list[object]]:
    return {path: files[path].to_json() for path in sorted(files)}


def encode(files: Files, *, max_size: int) -> bytes:
    """The manifest's value: zlib-compressed columnar JSON; InvalidInput past `max_size`.

    Columns (paths, concatenated hashes, sizes, modes) compress far better than one record
    per path: 10,000 paths take about a third of a 512 KiB value.
    """
    paths = sorted(files)
    body = {
        "format": FORMAT,
        "paths": paths,
        "hashes": "".join(files[p].hash for p in paths),
        "sizes": [files[p].size for p in paths],
        "modes": [files[p].mode for p in paths],
    }
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
        raise ValueError(f"malformed manifest: {exc}") from exc
