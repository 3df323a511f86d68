"""The local record of the last synced state, kept in `<basepath>/.fileconsul/`.

The record (`records/`) is the base of the three-way comparison, written durably, with the
revision it was synced at and how Consul's tree at that revision differs from the base
(usually not at all): from it and the commit records since, a node knows the remote tree
without reading the whole manifest. Beside it (`cache/`), each file's hash under its (size,
mtime, inode), so that a status of an unchanged tree reads no file contents; the cache is
disposable and written without fsync.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from fileconsul.errors import InvalidInput
from fileconsul.model import columns, facts
from fileconsul.model.facts import FileInfo
from fileconsul.model.manifest import FILE_COLUMNS
from fileconsul.model.paths import INTERNAL_DIR
from fileconsul.model.tree import KnownTree

FORMAT = 3
#: A file's (size, mtime in ns, inode): while it stands, the cached hash holds.
StatKey = tuple[int, int, int]


class Cached(NamedTuple):
    hash: str
    size: int
    mtime_ns: int
    inode: int

    @property
    def stat(self) -> StatKey:
        return (self.size, self.mtime_ns, self.inode)


HashCache = dict[str, Cached]
_CACHE_COLUMNS = (
    columns.Column("hashes", hashes=True),
    columns.Column("sizes"),
    columns.Column("mtimes"),
    columns.Column("inodes"),
)


@dataclass
class Record:
    prefix: str
    #: The revision last synced (0: none, or a record of the first format).
    revision: int = 0
    #: The base: each path's state when it was last the same on both sides.
    files: dict[str, FileInfo] = field(default_factory=dict)
    exists: bool = False
    hash_cache: HashCache = field(default_factory=dict)
    #: Consul's committed tree at the record's revision (on disk only where it differs from
    #: the base).
    remote: KnownTree | None = None
    #: (path, change) applied locally that no --exec hook has been handed yet.
    unreported: list[tuple[str, str]] = field(default_factory=list)

    def advance(self, changes: Iterable[tuple[str, FileInfo | None]]) -> None:
        """Take each (path, state now the same on both sides; None when gone)."""
        facts.update(self.files, changes)


def internal_dir(basepath: Path) -> Path:
    return basepath / INTERNAL_DIR


def _record_path(basepath: Path, prefix: str) -> Path:
    return internal_dir(basepath) / "records" / (quote(prefix, safe="") + ".json")


def _cache_path(basepath: Path, prefix: str) -> Path:
    return internal_dir(basepath) / "cache" / (quote(prefix, safe="") + ".json")


def load(basepath: Path, prefix: str) -> Record:
    path = _record_path(basepath, prefix)
    cache = _load_cache(basepath, prefix)
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return Record(prefix=prefix, hash_cache=cache)
    except (OSError, ValueError) as exc:
        raise InvalidInput(
            f"the local record {path} is unreadable ({exc}); remove it to start over "
            "(the next pull then treats equal files as synced)"
        ) from exc
    try:
        return _decode(data, prefix, cache)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidInput(f"the local record {path} is corrupt ({exc}); remove it") from exc


def _decode(data: Any, prefix: str, cache: HashCache) -> Record:
    found = data.get("format")
    if found == 1:
        files = {p: FileInfo(h, n, m) for p, (h, n, m) in data["files"].items()}
    else:
        files = columns.decode(data["files"], FILE_COLUMNS, FileInfo)
    if found in (1, 2):
        # Their "revision" was an index of Consul's, not a revision number: unknown.
        return Record(prefix, 0, files, True, cache)
    if found != FORMAT:
        raise ValueError(f"unknown format {found!r}")
    record = Record(prefix, int(data["revision"]), files, True, cache)
    remote = data.get("remote")
    if remote is not None:
        view = dict(files)
        view.update(columns.decode(remote["changed"], FILE_COLUMNS, FileInfo))
        for gone in remote["absent"]:
            view.pop(gone, None)
        record.remote = KnownTree(
            record.revision, int(remote["index"]), str(remote["digest"]), view
        )
    record.unreported = [(str(p), str(c)) for p, c in data.get("unreported", [])]
    return record


def _load_cache(basepath: Path, prefix: str) -> HashCache:
    """The hash cache; empty when missing or unreadable (it only saves reading files again)."""
    try:
        data = json.loads(_cache_path(basepath, prefix).read_bytes())
        return columns.decode(data, _CACHE_COLUMNS, Cached)
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def save(basepath: Path, record: Record) -> None:
    """Write the record durably (it is the base of every later plan), then the hash cache."""
    data = {
        "format": FORMAT,
        "prefix": record.prefix,
        "revision": record.revision,
        "files": columns.encode(record.files, FILE_COLUMNS),
        "remote": _remote_delta(record),
        "unreported": record.unreported,
    }
    _replace(_record_path(basepath, record.prefix), data, durable=True)
    save_cache(basepath, record)


def _remote_delta(record: Record) -> dict[str, Any] | None:
    """The remote tree, as where it differs from the base."""
    remote = record.remote
    if remote is None:
        return None
    moved = {p for p, _ in remote.files.items() ^ record.files.items()}
    changed = {p: remote.files[p] for p in moved if p in remote.files}
    return {
        "index": remote.index,
        "digest": remote.digest,
        "changed": columns.encode(changed, FILE_COLUMNS),
        "absent": sorted(moved - set(changed)),
    }


def save_cache(basepath: Path, record: Record) -> None:
    """Write the hash cache, not durably: a cache lost in a crash costs a rehash, and its
    entries are keyed by stat, so an old one never vouches for a changed file."""
    data = columns.encode(record.hash_cache, _CACHE_COLUMNS)
    _replace(_cache_path(basepath, record.prefix), data, durable=False)


def _replace(path: Path, data: dict[str, Any], *, durable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(json.dumps(data, separators=(",", ":")).encode())
        if durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
