"""Reading the local tree: every regular file that is not ignored, with its hash, size and
mode; the hash cache spares reading files whose (size, mtime, inode) did not change."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import xxhash

from fileconsul.errors import InvalidInput
from fileconsul.local.record import Cached, HashCache, StatKey
from fileconsul.model.facts import FileInfo
from fileconsul.model.paths import INTERNAL_DIR, TMP_PREFIX, unsafe_reason

if TYPE_CHECKING:
    import pathspec

IGNORE_FILE = ".fileconsulignore"
_CHUNK = 1 << 20
#: A file modified this recently may change again within the same timestamp tick: its hash is
#: not cached (file systems stamp with a clock that advances every few milliseconds).
_RACY_NS = 100_000_000
#: The setuid, setgid and sticky bits.
_SPECIAL = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Scan:
    files: dict[str, FileInfo] = field(default_factory=dict)
    #: Each file's (size, mtime, inode) when it was scanned.
    stats: dict[str, StatKey] = field(default_factory=dict)
    #: (path, reason) of entries skipped with a warning: links, FIFOs, sockets, devices.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (path, reason) of files whose names cannot be keys: a push refuses them.
    unsafe: list[tuple[str, str]] = field(default_factory=list)
    hash_cache: HashCache = field(default_factory=dict)
    bytes_hashed: int = 0
    #: Bytes of files read while hashing (up to scan's keep_bytes), by path.
    contents: dict[str, bytes] = field(default_factory=dict)
    #: Temporary files a killed pull left behind (relative paths); never synced.
    leftovers: list[str] = field(default_factory=list)
    #: (path, mode) of files with the setuid, setgid or sticky bit: fileconsul does not carry
    #: them, and a push refuses them rather than drop them unsaid.
    special: list[tuple[str, int]] = field(default_factory=list)
    #: The ignore rules of `.fileconsulignore` (None: there are none).
    rules: pathspec.GitIgnoreSpec | None = None

    def ignored(self, path: str) -> bool:
        """Whether this node's ignore rules cover `path` (a file's relative path)."""
        return self.rules is not None and self.rules.match_file(path)


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def file_mode(st: os.stat_result) -> int:
    return stat.S_IMODE(st.st_mode) & 0o777


def scan(root: Path, cache: Mapping[str, Cached] | None = None, keep_bytes: int = 0) -> Scan:
    """Every regular file under `root` that is not ignored, with its hash, size and mode.

    Up to `keep_bytes` of the files it had to read are kept in `contents`, so that a push
    does not read them twice.
    """
    cache = cache or {}
    result = Scan(rules=_ignore_spec(root))
    racy = time.time_ns() - _RACY_NS
    files, stats, hash_cache = result.files, result.stats, result.hash_cache
    for rel, entry in _walk(root, result.rules, result, cache):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            raise InvalidInput(f"cannot stat {rel} ({exc.strerror}); fix or ignore it") from exc
        size, mtime = st.st_size, st.st_mtime_ns
        cached = cache.get(rel)
        if st.st_mode & _SPECIAL:
            result.special.append((rel, stat.S_IMODE(st.st_mode)))
        if cached is not None and cached[1:] == (size, mtime, st.st_ctime_ns, st.st_ino):
            # The common case, kept cheap: the cached entry and its hash serve as they are.
            stats[rel] = (size, mtime, st.st_ctime_ns, st.st_ino)
            files[rel] = FileInfo(cached.hash, size, st.st_mode & 0o777)
            if mtime < racy:
                hash_cache[rel] = cached
            continue
        keep: list[bytes] | None = [] if size <= keep_bytes else None
        st, digest = _hash_stable(entry.path, rel, st, keep)
        key = stat_key(st)
        result.bytes_hashed += st.st_size
        if keep is not None:
            contents = result.contents[rel] = b"".join(keep)
            keep_bytes -= len(contents)
        if st.st_mtime_ns < racy:
            hash_cache[rel] = Cached(digest, *key)
        files[rel] = FileInfo(digest, st.st_size, file_mode(st))
        stats[rel] = key
    # Directories are read in no particular order; reports list paths sorted.
    result.skipped.sort()
    result.unsafe.sort()
    result.leftovers.sort()
    result.special.sort()
    return result


def scan_paths(root: Path, paths: Iterable[str]) -> Scan:
    """The facts of `paths` alone (the ones a pull changes), each read and hashed, found
    the way a scan finds files: never through a link, regular files only, the ignore rules
    read. A path behind a link, or one that is a link, a directory or a device, is skipped
    with its reason; a missing one is absent."""
    result = Scan(rules=_ignore_spec(root))
    opened: dict[str, int | None] = {}
    try:
        for rel in sorted(paths):
            _scan_one(root, rel, result, opened)
    finally:
        for fd in opened.values():
            if fd is not None and fd >= 0:
                os.close(fd)
    return result


def _scan_one(root: Path, rel: str, result: Scan, opened: dict[str, int | None]) -> None:
    parent_rel, _, name = rel.rpartition("/")
    parent = _directory(root, parent_rel, opened)
    if parent is None:
        return
    if parent == -1:
        result.skipped.append((rel, "behind a symbolic link or a file, not followed"))
        return
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        result.skipped.append((rel, "symbolic link, not followed"))
        return
    if not stat.S_ISREG(st.st_mode):
        if not stat.S_ISDIR(st.st_mode):
            result.skipped.append((rel, "not a regular file"))
        return
    if st.st_mode & _SPECIAL:
        result.special.append((rel, stat.S_IMODE(st.st_mode)))
    path = os.path.join(os.fspath(root), rel)
    st, digest = _hash_stable(path, rel, st, None)
    result.bytes_hashed += st.st_size
    result.files[rel] = FileInfo(digest, st.st_size, file_mode(st))
    result.stats[rel] = stat_key(st)


def _directory(root: Path, rel_dir: str, opened: dict[str, int | None]) -> int | None:
    """The descriptor of the directory `rel_dir` under `root`, opened one segment at a time
    without following a link: None when it is missing, -1 when a link or a file is on the
    way."""
    if rel_dir in opened:
        return opened[rel_dir]
    if not rel_dir:
        fd: int | None = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    else:
        up, _, name = rel_dir.rpartition("/")
        parent = _directory(root, up, opened)
        if parent is None or parent == -1:
            fd = parent
        else:
            try:
                fd = os.open(name, _NOFOLLOW_DIR, dir_fd=parent)
            except FileNotFoundError:
                fd = None
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise InvalidInput(f"cannot open {rel_dir} ({exc.strerror})") from exc
                fd = -1
    opened[rel_dir] = fd
    return fd


def _ignore_spec(root: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        lines = (root / IGNORE_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {root / IGNORE_FILE} ({exc}); fix or remove it") from exc
    # Imported here: most trees have no ignore file, and the import is a noticeable part of
    # a command's start-up.
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


def _walk(
    root: Path, spec: pathspec.GitIgnoreSpec | None, result: Scan, known: Mapping[str, object]
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every regular file to sync, as (relative path, entry); the rest is noted on `result`.
    A path in `known` (the hash cache, where only files to sync go) is not checked again."""
    base = os.fspath(root)
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(base, rel_dir) if rel_dir else base))
        except OSError as exc:
            raise InvalidInput(f"cannot list {rel_dir or root} ({exc.strerror})") from exc
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if spec is None and rel in known and entry.is_file(follow_symlinks=False):
                yield rel, entry
                continue
            kind = _kind(rel, entry, spec, top=not rel_dir)
            if kind == "file":
                yield rel, entry
            elif kind == "dir":
                pending.append(rel)
            elif kind == "leftover":
                result.leftovers.append(rel)
            elif kind is not None:
                (result.unsafe if kind.startswith("unsafe: ") else result.skipped).append(
                    (rel, kind.removeprefix("unsafe: "))
                )


def _kind(
    rel: str, entry: os.DirEntry[str], spec: pathspec.GitIgnoreSpec | None, *, top: bool
) -> str | None:
    """What the scan does with an entry: "file", "dir", "leftover", None to pass over it, or
    why it is skipped ("unsafe: ..." for names that cannot be keys)."""
    if top and entry.name == INTERNAL_DIR:
        return None
    if entry.name.startswith(TMP_PREFIX):
        return "leftover"
    is_dir = entry.is_dir(follow_symlinks=False)
    if spec is not None and spec.match_file(rel + "/" if is_dir else rel):
        return None
    if is_dir:
        return "dir"
    if entry.is_file(follow_symlinks=False):
        reason = unsafe_reason(rel)
        return "file" if reason is None else f"unsafe: {reason}"
    if entry.is_symlink():
        return "symbolic link, not followed"
    return "not a regular file"


def _hash_file(
    path: str, size_hint: int, keep: list[bytes] | None
) -> tuple[str, int, os.stat_result]:
    """The file's hash, the bytes read and its stat after reading; its bytes are also
    appended to `keep` when given. A read shorter than asked is the end of a regular file, so
    a file still of its scanned size takes one read."""
    hasher = xxhash.xxh3_64()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        total = 0
        want = min(size_hint + 1, _CHUNK)
        while True:
            chunk = os.read(fd, want)
            hasher.update(chunk)
            total += len(chunk)
            if keep is not None:
                keep.append(chunk)
            if len(chunk) < want:
                break
            want = _CHUNK
        after = os.fstat(fd)
    finally:
        os.close(fd)
    return hasher.hexdigest(), total, after


def _hash_stable(
    path: str, rel: str, st: os.stat_result, keep: list[bytes] | None
) -> tuple[os.stat_result, str]:
    """Hash a file, re-reading it while it changes under us (a few times at most)."""
    for _ in range(3):
        if keep is not None:
            keep.clear()
        try:
            digest, size, after = _hash_file(path, st.st_size, keep)
        except OSError as exc:
            raise InvalidInput(
                f"cannot read {rel} ({exc.strerror}); fix its permissions or add it to "
                f"{IGNORE_FILE}"
            ) from exc
        if size == after.st_size and stat_key(after) == stat_key(st):
            return after, digest
        st = after
    raise InvalidInput(f"{rel} keeps changing while it is read; retry when it is quiet")


def read_file(root: Path, rel: str, limit: int) -> bytes:
    """A file's bytes, refusing links and anything over `limit` bytes."""
    try:
        fd = os.open(root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInput(f"cannot read {rel} ({exc.strerror}); nothing was pushed") from exc
    try:
        chunks = []
        total = 0
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise InvalidInput(
                    f"{rel} is over Consul's {limit}-byte value limit; nothing was pushed "
                    f"(add it to {IGNORE_FILE} or shrink it)"
                )
    except OSError as exc:
        raise InvalidInput(f"cannot read {rel} ({exc.strerror}); nothing was pushed") from exc
    finally:
        os.close(fd)
    return b"".join(chunks)
