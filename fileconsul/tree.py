"""The local tree: scan it (ignore rules, hashes), read files, and write them atomically.

Writes never leave the basepath: every directory below it is opened with O_NOFOLLOW relative
to its parent's descriptor, so a symlink planted anywhere on the way is refused, not followed.
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import xxhash

from fileconsul.errors import InvalidInput
from fileconsul.keys import INTERNAL_DIR, unsafe_reason
from fileconsul.manifest import FileInfo
from fileconsul.state import StatKey

if TYPE_CHECKING:
    import pathspec

IGNORE_FILE = ".fileconsulignore"
TMP_PREFIX = ".fileconsul-tmp-"
_CHUNK = 1 << 20
#: A file modified this recently may change again within the same timestamp tick: its hash is
#: not cached (file systems stamp with a clock that advances every few milliseconds).
_RACY_NS = 100_000_000
#: From this many files or directories on, one syncfs(2) beats an fsync of each; below it,
#: fsync flushes only what fileconsul wrote, not every other writer's data on the disk.
_SYNCFS_FROM = 16
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Scan:
    files: dict[str, FileInfo] = field(default_factory=dict)
    #: Each file's (size, mtime, inode) when it was scanned.
    stats: dict[str, StatKey] = field(default_factory=dict)
    #: (path, reason) of entries skipped with a warning: links, FIFOs, sockets, devices.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: (path, reason) of files whose names cannot be keys: a push refuses them.
    unsafe: list[tuple[str, str]] = field(default_factory=list)
    hash_cache: dict[str, tuple[StatKey, str]] = field(default_factory=dict)
    bytes_hashed: int = 0
    #: Bytes of files read while hashing (up to scan's keep_bytes), by path.
    contents: dict[str, bytes] = field(default_factory=dict)
    #: Temporary files a killed pull left behind (relative paths); never synced.
    leftovers: list[str] = field(default_factory=list)


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def file_mode(st: os.stat_result) -> int:
    return stat.S_IMODE(st.st_mode) & 0o777


def _ignore_spec(root: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        lines = (root / IGNORE_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {root / IGNORE_FILE} ({exc}); fix or remove it") from exc
    # Imported here: most trees have no ignore file, and the import costs a command ~10 ms.
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


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


def scan(
    root: Path,
    cache: Mapping[str, tuple[StatKey, str]] | None = None,
    *,
    keep_bytes: int = 0,
    sink: Callable[[str, FileInfo, bytes | None], None] | None = None,
) -> Scan:
    """Every regular file under `root` that is not ignored, with its hash, size and mode.

    Up to `keep_bytes` of the files it had to read are kept in `contents`, so that a push
    does not read them twice. With a `sink`, each file is handed to it instead as soon as it
    is known, with its bytes when they were read (None when its hash came from the cache).
    """
    cache = cache or {}
    spec = _ignore_spec(root)
    result = Scan()
    now_ns = time.time_ns()
    for rel, entry in _walk(root, spec, result):
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as exc:
            raise InvalidInput(f"cannot stat {rel} ({exc.strerror}); fix or ignore it") from exc
        key = stat_key(st)
        cached = cache.get(rel)
        data = None
        if cached is not None and cached[0] == key:
            digest = cached[1]
        else:
            keep: list[bytes] | None = [] if sink or st.st_size <= keep_bytes else None
            st, digest = _hash_stable(entry.path, rel, st, keep)
            key = stat_key(st)
            result.bytes_hashed += st.st_size
            if keep is not None:
                data = b"".join(keep)
        if now_ns - st.st_mtime_ns > _RACY_NS:
            result.hash_cache[rel] = (key, digest)
        info = result.files[rel] = FileInfo(digest, st.st_size, file_mode(st))
        result.stats[rel] = key
        if sink is not None:
            sink(rel, info, data)
        elif data is not None:
            result.contents[rel] = data
            keep_bytes -= st.st_size
    # Directories are read in no particular order; reports list paths sorted.
    result.skipped.sort()
    result.unsafe.sort()
    result.leftovers.sort()
    return result


def _walk(
    root: Path, spec: pathspec.GitIgnoreSpec | None, result: Scan
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every regular file to sync, as (relative path, entry); the rest is noted on `result`."""
    base = os.fspath(root)
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            entries = list(os.scandir(os.path.join(base, rel_dir) if rel_dir else base))
        except OSError as exc:
            raise InvalidInput(f"cannot list {rel_dir or root} ({exc.strerror})") from exc
        for entry in entries:
            name = entry.name
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if not rel_dir and name == INTERNAL_DIR:
                continue
            if name.startswith(TMP_PREFIX):
                result.leftovers.append(rel)
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            if spec is not None and spec.match_file(rel + "/" if is_dir else rel):
                continue
            if is_dir:
                pending.append(rel)
            elif entry.is_file(follow_symlinks=False):
                if (reason := unsafe_reason(rel)) is None:
                    yield rel, entry
                else:
                    result.unsafe.append((rel, reason))
            elif entry.is_symlink():
                result.skipped.append((rel, "symbolic link, not followed"))
            else:
                result.skipped.append((rel, "not a regular file"))


def read_file(root: Path, rel: str, limit: int) -> tuple[bytes, os.stat_result]:
    """A file's bytes and its stat, refusing links and anything over `limit` bytes."""
    try:
        fd = os.open(root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidInput(f"cannot read {rel} ({exc.strerror}); nothing was pushed") from exc
    try:
        st = os.fstat(fd)
        if st.st_size > limit:
            raise InvalidInput(
                f"{rel} is {st.st_size} bytes, over Consul's {limit}-byte value limit; "
                f"nothing was pushed (add it to {IGNORE_FILE} or shrink it)"
            )
        chunks = []
        while chunk := os.read(fd, _CHUNK):
            chunks.append(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InvalidInput(f"{rel} grew past the {limit}-byte value limit; nothing was pushed")
    return data, st


class UnsafeLocalPath(InvalidInput):
    """A path under the basepath that fileconsul will not write through."""


@dataclass(frozen=True)
class Staged:
    """A file, or a whole new directory, written under a temporary name beside its place."""

    rel: str
    dir_fd: int
    tmp_name: str
    name: str
    is_dir: bool = False


class TreeWriter:
    """Writes and deletes files below `root`, never following a link, always atomically.

    A file whose directory exists is written to a temporary file beside it. A file whose
    directory does not exist yet is written, under its own name, into a temporary copy of the
    highest missing directory, which is renamed in whole: one rename for a new subtree rather
    than one per file.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._dirs: dict[str, int] = {}
        #: Directories inside staged new subtrees, by the relative path they will have.
        self._inside: dict[str, int] = {}
        #: Every file or new directory staged and not yet renamed in or discarded.
        self.staged: list[Staged] = []
        #: Every file written, as (directory descriptor, name on disk), for fsync.
        self._written: list[tuple[int, str]] = []
        # Files are staged from several threads at once (their writes overlap).
        self._lock = threading.Lock()
        self._token = secrets.token_hex(4)
        self._count = itertools.count()
        self._umask = _umask()

    def __enter__(self) -> TreeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in [*self._dirs.values(), *self._inside.values()]:
            os.close(fd)
        self._dirs.clear()
        self._inside.clear()

    def _dir(self, rel_dir: str) -> int | None:
        """The descriptor of the existing directory `rel_dir`; None when it is missing."""
        fd = self._dirs.get(rel_dir)
        if fd is not None:
            return fd
        with self._lock:
            return self._open_dir(rel_dir)

    def _open_dir(self, rel_dir: str) -> int | None:
        if rel_dir in self._dirs:
            return self._dirs[rel_dir]
        if not rel_dir:
            fd = os.open(self.root, _DIR_FLAGS & ~os.O_NOFOLLOW)
        else:
            parent_rel, _, name = rel_dir.rpartition("/")
            parent = self._open_dir(parent_rel)
            if parent is None:
                return None
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeLocalPath(
                        f"{rel_dir} is a symbolic link or not a directory; fileconsul does not "
                        "write through it"
                    ) from exc
                raise
        self._dirs[rel_dir] = fd
        return fd

    def _new_dir(self, rel_dir: str) -> int | None:
        """Where files of the missing directory `rel_dir` go: a directory inside a staged
        subtree. None when `rel_dir` exists."""
        if rel_dir in self._inside:
            return self._inside[rel_dir]
        if self._open_dir(rel_dir) is not None:
            return None
        up, _, name = rel_dir.rpartition("/")
        outer = self._new_dir(up)
        if outer is None:
            parent = self._open_dir(up)
            assert parent is not None
            tmp_name = self._tmp_name()
            os.mkdir(tmp_name, 0o755, dir_fd=parent)
            fd = os.open(tmp_name, _DIR_FLAGS, dir_fd=parent)
            self.staged.append(Staged(rel_dir, parent, tmp_name, name, is_dir=True))
        else:
            os.mkdir(name, 0o755, dir_fd=outer)
            fd = os.open(name, _DIR_FLAGS, dir_fd=outer)
        self._inside[rel_dir] = fd
        return fd

    def _tmp_name(self) -> str:
        return f"{TMP_PREFIX}{self._token}-{next(self._count)}"

    def current(self, rel: str) -> StatKey | None:
        """The stat key of the regular file at `rel`, None when absent; refuses anything else."""
        parent_rel, _, name = rel.rpartition("/")
        parent = self._dir(parent_rel)
        if parent is None:
            return None
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeLocalPath(f"{rel} exists and is not a regular file; fileconsul leaves it")
        return stat_key(st)

    def local_changes(self, paths: list[str], expected: Mapping[str, StatKey]) -> list[str]:
        """Which of `paths` no longer stand as `expected` (their stat when scanned, None for
        absent), and which new directories had their place taken since staging began."""
        taken = []
        for item in self.staged:
            if item.is_dir:
                with suppress(FileNotFoundError):
                    os.stat(item.name, dir_fd=item.dir_fd, follow_symlinks=False)
                    taken.append(item.rel)
        for path in paths:
            was = expected.get(path)
            # A file of a new directory is still absent while that directory's place is free.
            if was is None and path.rpartition("/")[0] in self._inside:
                continue
            if self.current(path) != was:
                taken.append(path)
        return taken

    def stage(self, rel: str, data: bytes, mode: int) -> None:
        """Write `data` where `rel` will appear once `durable` and `commit_all` have run.
        Safe to call from several threads."""
        parent_rel, _, name = rel.rpartition("/")
        with self._lock:
            inside = self._new_dir(parent_rel) if parent_rel else None
            parent = inside if inside is not None else self._open_dir(parent_rel)
            assert parent is not None
            if inside is None:
                disk_name = self._tmp_name()
                self.staged.append(Staged(rel, parent, disk_name, name))
            else:
                disk_name = name
            self._written.append((parent, disk_name))
        fd = os.open(
            disk_name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            mode & 0o777,
            dir_fd=parent,
        )
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if mode & 0o777 & self._umask:
                os.fchmod(fd, mode & 0o777)
        finally:
            os.close(fd)

    def durable(self) -> None:
        """Get every staged file's bytes to disk before any is renamed in: for many files one
        syncfs(2) of the basepath's file system where Linux offers it (one journal commit
        instead of one per file), else an fsync of each file and new directory."""
        if not self._written or (len(self._written) >= _SYNCFS_FROM and self._syncfs()):
            return
        for dir_fd, name in self._written:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for fd in self._inside.values():
            os.fsync(fd)

    def commit_all(self) -> None:
        """Rename every staged file and new directory into its place."""
        for item in self.staged:
            os.rename(item.tmp_name, item.name, src_dir_fd=item.dir_fd, dst_dir_fd=item.dir_fd)
        self.staged.clear()
        self._written.clear()

    def discard_all(self) -> None:
        for item in self.staged:
            with suppress(OSError):
                if item.is_dir:
                    shutil.rmtree(item.tmp_name, dir_fd=item.dir_fd)
                else:
                    os.unlink(item.tmp_name, dir_fd=item.dir_fd)
        self.staged.clear()
        self._written.clear()

    def remove_leftover(self, rel: str) -> None:
        """Remove a temporary file or directory an interrupted pull left (never through a
        link: rmtree with a directory descriptor does not follow them)."""
        parent_rel, _, name = rel.rpartition("/")
        with suppress(OSError, UnsafeLocalPath):
            parent = self._dir(parent_rel)
            if parent is None or not name.startswith(TMP_PREFIX):
                return
            if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                shutil.rmtree(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)

    def delete(self, rel: str) -> None:
        parent_rel, _, name = rel.rpartition("/")
        parent = self._dir(parent_rel)
        if parent is None:
            return
        with suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent)
        self._prune(parent_rel)

    def _prune(self, rel_dir: str) -> None:
        """Remove directories a delete left empty, up to (not including) the root."""
        while rel_dir:
            parent_rel, _, name = rel_dir.rpartition("/")
            parent = self._dirs.get(parent_rel)
            if parent is None:
                return
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError:
                return
            os.close(self._dirs.pop(rel_dir))
            rel_dir = parent_rel

    def sync_dirs(self) -> None:
        """Make the renames and deletes durable: one syncfs for many directories, else an
        fsync of each."""
        if len(self._dirs) >= _SYNCFS_FROM and self._syncfs():
            return
        for fd in self._dirs.values():
            os.fsync(fd)

    def _syncfs(self) -> bool:
        root = self._dir("")
        syncfs = _syncfs()
        return root is not None and syncfs is not None and syncfs(root) == 0


def _umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """libc's syncfs, or None where there is none."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return function
