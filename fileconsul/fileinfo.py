"""What fileconsul knows of one file (its content hash, size and mode) and how it hashes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

import xxhash

DEFAULT_MODE = 0o644


class FileInfo(NamedTuple):
    """One file's facts (a tuple: tens of thousands are built per command)."""

    hash: str
    size: int
    mode: int = DEFAULT_MODE


#: A tree: relative path -> facts.
Files = Mapping[str, FileInfo]


def update(files: dict[str, FileInfo], changes: Iterable[tuple[str, FileInfo | None]]) -> None:
    """Set each (path, facts) on `files`, in place; None removes the path."""
    for path, info in changes:
        if info is None:
            files.pop(path, None)
        else:
            files[path] = info


def content_hash(data: bytes) -> str:
    """The xxh3-64 of a file's bytes, as 16 hex digits; a key's Flags hold the same number."""
    return xxhash.xxh3_64_hexdigest(data)


def hash_to_flags(digest: str) -> int:
    return int(digest, 16)
