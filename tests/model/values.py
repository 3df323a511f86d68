"""Plain values for the model's unit tests: file facts, KV entries, heads and records."""

from __future__ import annotations

from dataclasses import replace

from fileconsul.model import records
from fileconsul.model.facts import FileInfo, content_hash, hash_to_flags
from fileconsul.model.manifest import digest
from fileconsul.model.records import Author, Change, Head
from fileconsul.model.tree import KVEntry

P = "p"
AUTHOR = Author("n", "someone", "2026-01-01T00:00:00Z")


def info(data: bytes, mode: int = 0o644) -> FileInfo:
    return FileInfo(content_hash(data), len(data), mode)


def entry(path: str, data: bytes, index: int, *, flags: int | None = None) -> KVEntry:
    own = hash_to_flags(content_hash(data)) if flags is None else flags
    return KVEntry(f"{P}/{path}", data, own, index)


def head_at(files: dict[str, FileInfo], revision: int, index: int) -> Head:
    commit = records.new_commit(revision, [], files, digest(files), author=AUTHOR, message="")
    return replace(records.new_head(commit, keep=10, history="h"), index=index)


def journal(revision: int, changes: list[Change]) -> KVEntry:
    """The record a push leaves before its files: what a push that died leaves behind."""
    author = AUTHOR._replace(node="dead-node")
    commit = records.new_commit(revision, changes, {}, "0" * 16, author=author, message="")
    key = f"{P}.fileconsul/log/{revision:010d}"
    return KVEntry(key, commit.encode(max_size=1 << 20), 0, 99)
