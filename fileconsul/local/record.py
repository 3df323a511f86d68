"""The local record of the last synced state, kept in `<basepath>/.fileconsul/`.

The record (`records/`) is the base of the three-way comparison, written durably, with the
revision it was synced at and how Consul's tree at that revision differs from the base
(usually not at all): from it and the commit records since, a node knows the remote tree
without reading the whole manifest. Beside it (`cache/`), each file's hash under its (size,
mtime, ctime, inode), so that a status of an unchanged tree reads no file contents; the cache
is disposable and written without fsync.

A save costs what changed, whatever the tree's size: the record is a snapshot and a journal
of changes since, one line appended (and fsynced) per save; the journal is folded into a new
snapshot once it is long. A snapshot names its generation, and a journal line the generation
it follows: a crash between a new snapshot and the removal of the old journal leaves lines
that no longer apply, and they are passed over. A process that saved a record (a watch) knows
it: loading it again costs a stat of the two files, not a parse.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from fileconsul.errors import InvalidInput
from fileconsul.model import columns, facts
from fileconsul.model.facts import FileInfo
from fileconsul.model.manifest import FILE_COLUMNS
from fileconsul.model.paths import INTERNAL_DIR
from fileconsul.model.seal import Sealed
from fileconsul.model.tree import KnownTree

FORMAT = 3
#: A file's (size, mtime, ctime in ns, inode): while it stands, the cached hash holds. The
#: ctime moves with any write or chmod, even one that puts the mtime back.
StatKey = tuple[int, int, int, int]
#: Journal lines kept before they are folded into a snapshot.
_JOURNAL_LINES = 256


class Cached(NamedTuple):
    hash: str
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @property
    def stat(self) -> StatKey:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode)


HashCache = dict[str, Cached]
_CACHE_COLUMNS = (
    columns.Column("hashes", hashes=True),
    columns.Column("sizes"),
    columns.Column("mtimes"),
    columns.Column("ctimes"),
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


def _journal_path(basepath: Path, prefix: str) -> Path:
    return internal_dir(basepath) / "records" / (quote(prefix, safe="") + ".journal")


def _cache_path(basepath: Path, prefix: str) -> Path:
    return internal_dir(basepath) / "cache" / (quote(prefix, safe="") + ".json")


@dataclass
class _Known:
    """What this process last read or wrote of a record: the files' stats then, the state,
    the snapshot's generation and how many journal lines follow it."""

    stats: tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]
    record: Record
    generation: int
    lines: int
    #: The next save writes a snapshot: the journal ends in a torn line (a crash mid-append),
    #: or the snapshot is of an older format.
    fold: bool = False


_known: dict[tuple[str, str], _Known] = {}


def load(basepath: Path, prefix: str, *, cache: bool = True) -> Record:
    """The record (and, with `cache`, the hash cache). InvalidInput when it is unreadable."""
    record = _load_record(basepath, prefix)
    if cache:
        record.hash_cache = load_cache(basepath, prefix)
    return record


def _load_record(basepath: Path, prefix: str) -> Record:
    path, journal = _record_path(basepath, prefix), _journal_path(basepath, prefix)
    key = (os.fspath(basepath), prefix)
    stats = (_stat(path), _stat(journal))
    known = _known.get(key)
    if known is not None and known.stats == stats:
        return _copy(known.record)
    try:
        data = json.loads(path.read_bytes()) if stats[0] is not None else None
    except (OSError, ValueError) as exc:
        raise InvalidInput(
            f"the local record {path} is unreadable ({exc}); remove it to start over "
            "(the next pull then treats equal files as synced)"
        ) from exc
    if data is None:
        return Record(prefix=prefix)
    try:
        record, generation = _decode(data, prefix)
        lines, torn = _replay(record, journal, generation) if stats[1] is not None else (0, False)
        torn = torn or data.get("format") != FORMAT
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidInput(f"the local record {path} is corrupt ({exc}); remove it") from exc
    _known[key] = _Known(stats, _copy(record), generation, lines, torn)
    return record


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _copy(record: Record) -> Record:
    remote = record.remote
    if remote is not None:
        remote = replace(remote, files=dict(remote.files))
    return replace(
        record,
        files=dict(record.files),
        hash_cache={},
        remote=remote,
        unreported=list(record.unreported),
    )


def _decode(data: Any, prefix: str) -> tuple[Record, int]:
    found = data.get("format")
    if found == 1:
        files = {p: FileInfo(h, n, m) for p, (h, n, m) in data["files"].items()}
    else:
        files = columns.decode(data["files"], FILE_COLUMNS, FileInfo)
    if found in (1, 2):
        # Their "revision" was an index of Consul's, not a revision number: unknown.
        return Record(prefix, 0, files, True), 0
    if found != FORMAT:
        raise ValueError(f"unknown format {found!r}")
    record = Record(prefix, int(data["revision"]), files, True)
    _take_state(record, data)
    return record, int(data.get("generation") or 0)


def _take_state(record: Record, data: Any) -> None:
    """The remote tree and the hooks owed, as a snapshot or a journal line states them."""
    remote = data.get("remote")
    record.remote = None
    if remote is not None:
        view = dict(record.files)
        view.update(columns.decode(remote["changed"], FILE_COLUMNS, FileInfo))
        for gone in remote["absent"]:
            view.pop(gone, None)
        sealed = remote.get("sealed")
        record.remote = KnownTree(
            record.revision,
            int(remote["index"]),
            str(remote["digest"]),
            view,
            None if sealed is None else _sealed(sealed),
        )
    record.unreported = [(str(p), str(c)) for p, c in data.get("unreported", [])]


def _replay(record: Record, journal: Path, generation: int) -> tuple[int, bool]:
    """Apply the journal's lines of `generation` to `record`: how many there were, and
    whether the last one is torn (never acknowledged: passed over)."""
    raw = journal.read_bytes().split(b"\n")
    lines = 0
    for number, line in enumerate(raw):
        if not line:
            continue
        try:
            data = json.loads(line)
        except ValueError:
            if number == len(raw) - 1:
                return lines, True
            raise
        if data.get("generation") != generation:
            continue  # a journal the last snapshot folded in already
        record.revision = int(data["revision"])
        record.advance(columns.decode(data["set"], FILE_COLUMNS, FileInfo).items())
        record.advance((path, None) for path in data["removed"])
        _take_state(record, data)
        lines += 1
    return lines, False


def _sealed(data: Any) -> Sealed:
    buckets = tuple(str(b) for b in data["buckets"])
    return Sealed(str(data["id"]), buckets, str(data.get("key", "")), str(data.get("time", "")))


def load_cache(basepath: Path, prefix: str) -> HashCache:
    """The hash cache; empty when missing or unreadable (it only saves reading files again)."""
    try:
        data = json.loads(_cache_path(basepath, prefix).read_bytes())
        return columns.decode(data, _CACHE_COLUMNS, Cached)
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def save(basepath: Path, record: Record, *, cache: bool) -> None:
    """Write the record durably (it is the base of every later plan): one journal line of
    what changed since this process last read or wrote it, or a new snapshot; then, with
    `cache`, the hash cache."""
    key = (os.fspath(basepath), record.prefix)
    path, journal = _record_path(basepath, record.prefix), _journal_path(basepath, record.prefix)
    record.exists = True
    known = _known.get(key)
    if known is None or known.fold or known.stats != (_stat(path), _stat(journal)):
        _snapshot(basepath, record, known.generation + 1 if known else 1)
    else:
        changed = {p for p, _ in record.files.items() ^ known.record.files.items()}
        if known.lines >= _JOURNAL_LINES or len(changed) > len(record.files) // 4 + 64:
            _snapshot(basepath, record, known.generation + 1)
        else:
            _append(journal, record, changed, known)
    if cache:
        save_cache(basepath, record)


def _snapshot(basepath: Path, record: Record, generation: int) -> None:
    """The whole record as a new snapshot, then the old journal removed (its lines are of
    the generation before: passed over if it outlives a crash)."""
    path, journal = _record_path(basepath, record.prefix), _journal_path(basepath, record.prefix)
    data = {
        "format": FORMAT,
        "generation": generation,
        "prefix": record.prefix,
        "revision": record.revision,
        "files": columns.encode(record.files, FILE_COLUMNS),
        "remote": _remote_delta(record),
        "unreported": record.unreported,
    }
    _replace(path, data, durable=True)
    journal.unlink(missing_ok=True)
    key = (os.fspath(basepath), record.prefix)
    _known[key] = _Known((_stat(path), None), _copy(record), generation, 0)


def _append(journal: Path, record: Record, changed: set[str], known: _Known) -> None:
    set_ = {p: record.files[p] for p in changed if p in record.files}
    line = {
        "generation": known.generation,
        "revision": record.revision,
        "set": columns.encode(set_, FILE_COLUMNS),
        "removed": sorted(changed - set_.keys()),
        "remote": _remote_delta(record),
        "unreported": record.unreported,
    }
    created = not journal.exists()
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, json.dumps(line, separators=(",", ":")).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(journal.parent)
    known.stats = (known.stats[0], _stat(journal))
    known.record, known.lines = _copy(record), known.lines + 1


def _remote_delta(record: Record) -> dict[str, Any] | None:
    """The remote tree, as where it differs from the base."""
    remote = record.remote
    if remote is None:
        return None
    moved = {p for p, _ in remote.files.items() ^ record.files.items()}
    changed = {p: remote.files[p] for p in moved if p in remote.files}
    found: dict[str, Any] = {
        "index": remote.index,
        "digest": remote.digest,
        "changed": columns.encode(changed, FILE_COLUMNS),
        "absent": sorted(moved - set(changed)),
    }
    if remote.sealed is not None:
        sealed = remote.sealed
        found["sealed"] = {
            "id": sealed.id,
            "buckets": list(sealed.buckets),
            "key": sealed.key,
            "time": sealed.time,
        }
    return found


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
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
