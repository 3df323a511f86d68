"""What fileconsul knows of one file (its content hash, size and mode) and how it hashes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

import xxhash

DEFAULT_MODE = 0o644

ChangeKind = Literal["added", "modified", "deleted", "mode"]


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


def same(a: FileInfo | None, b: FileInfo | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.hash == b.hash and a.mode == b.mode


def classify(base: FileInfo | None, current: FileInfo | None) -> ChangeKind | None:
    """How `current` differs from `base`, or None when it does not."""
    if same(base, current):
        return None
    if base is None:
        return "added"
    if current is None:
        return "deleted"
    return "modified" if base.hash != current.hash else "mode"
