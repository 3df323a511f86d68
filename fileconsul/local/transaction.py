"""Writing the local tree as one transaction: files are staged under temporary names, then
renamed into place together, or all discarded.

Writes never leave the basepath: every directory below it is opened with O_NOFOLLOW relative
to its parent's descriptor, so a symlink planted anywhere on the way is refused, not followed.
Every OSError is translated here, at the boundary, into an InvalidInput naming the path.
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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from fileconsul.errors import ConflictError, InvalidInput
from fileconsul.local import putback
from fileconsul.local.record import StatKey
from fileconsul.local.scan import stat_key
from fileconsul.model.paths import TMP_PREFIX

#: From this many files or directories on, one syncfs(2) beats an fsync of each; below it,
#: fsync flushes only what fileconsul wrote, not every other writer's data on the disk.
_SYNCFS_FROM = 16
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeLocalPath(InvalidInput):
    """A path under the basepath that fileconsul will not write through."""


@dataclass(frozen=True)
class _Staged:
    """A file, or a whole new directory, written under a temporary name beside its place."""

    rel: str
    dir_fd: int
    tmp_name: str
    name: str
    is_dir: bool = False


_UNCHANGED = "nothing was changed (free some space or fix the permissions, then pull again)"
_PARTWAY = "the pull stopped partway (fix the cause, then pull again to finish it)"


@contextmanager
def _translated(rel: str, doing: str, outcome: str = _UNCHANGED) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise InvalidInput(f"cannot {doing} {rel} ({exc.strerror or exc}); {outcome}") from exc


@contextmanager
def transaction(root: Path, *, keep: bool = False) -> Iterator[Transaction]:
    """A transaction on the tree under `root`: whatever was staged and not committed when the
    block ends (an error, an interrupt) is discarded. With `keep`, a commit can be put back
    until it is finished, and is put back if the block ends first."""
    txn = Transaction(root, keep=keep)
    try:
        yield txn
    finally:
        txn.close()


def recover(root: Path) -> bool:
    """Put back an apply a crash left between its renames and its check (its journal says
    what it did); whether there was one."""
    log = putback.pending(root)
    if log is None:
        return False
    try:
        with transaction(root) as txn, _translated("the interrupted apply", "put back", _PARTWAY):
            log.put_back(txn.parent)
    finally:
        log.close()
    return True


class Transaction:
    """Stage files (from several threads at once), plan deletes, then `commit` them together.

    A file whose directory exists is staged as a temporary file beside it. A file whose
    directory does not exist yet is staged, under its own name, in a temporary copy of the
    highest missing directory, renamed in whole: one rename for a new subtree rather than one
    per file.
    """

    def __init__(self, root: Path, *, keep: bool = False) -> None:
        self.root = root
        #: With `keep`: what the commit did, to put it back (None: commits are final).
        self._undo = putback.UndoLog(root) if keep else None
        self._committed = False
        self._dirs: dict[str, int] = {}
        #: Directories inside staged new subtrees, by the relative path they will have.
        self._inside: dict[str, int] = {}
        self._staged: list[_Staged] = []
        #: Every file written, as (directory descriptor, name on disk), for fsync.
        self._written: list[tuple[int, str]] = []
        self._deletes: list[str] = []
        #: The same, as a set: a file deleted here may give its place to a directory.
        self._deleting: set[str] = set()
        #: Directories the deletes empty, whose place a staged file takes.
        self._emptying: set[str] = set()
        self._lock = threading.Lock()
        self._token = secrets.token_hex(4)
        self._count = itertools.count()
        self._umask = _umask()

    # -- directories ----------------------------------------------------------------------

    def _parent(self, rel: str) -> tuple[int | None, str]:
        """The descriptor of `rel`'s existing parent directory (None when missing), and the
        last segment of `rel`."""
        return self.parent(rel, False)

    def parent(self, rel: str, make: bool) -> tuple[int | None, str]:
        """As `_parent`; with `make`, the missing directories on the way are created (never
        through a link)."""
        parent_rel, _, name = rel.rpartition("/")
        fd = self._dirs.get(parent_rel)
        if fd is None:
            with self._lock:
                fd = self._made_dir(parent_rel) if make else self._open_dir(parent_rel)
        return fd, name

    def _made_dir(self, rel_dir: str) -> int:
        fd = self._open_dir(rel_dir)
        if fd is not None:
            return fd
        up, _, name = rel_dir.rpartition("/")
        with suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=self._made_dir(up))
        made = self._open_dir(rel_dir)
        assert made is not None
        return made

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
                if exc.errno == errno.ENOTDIR and rel_dir in self._deleting:
                    return None  # a file this transaction deletes: a directory takes its place
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeLocalPath(
                        f"{rel_dir} is a symbolic link or not a directory here; fileconsul "
                        "does not write through it"
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
        outer = self._new_dir(up) if up else None
        if outer is None:
            parent = self._open_dir(up)
            assert parent is not None
            tmp_name = self._tmp_name()
            os.mkdir(tmp_name, 0o755, dir_fd=parent)
            fd = os.open(tmp_name, _DIR_FLAGS, dir_fd=parent)
            self._staged.append(_Staged(rel_dir, parent, tmp_name, name, is_dir=True))
        else:
            os.mkdir(name, 0o755, dir_fd=outer)
            fd = os.open(name, _DIR_FLAGS, dir_fd=outer)
        self._inside[rel_dir] = fd
        return fd

    def _tmp_name(self) -> str:
        return f"{TMP_PREFIX}{self._token}-{next(self._count)}"

    # -- staging --------------------------------------------------------------------------

    def stage(self, rel: str, data: bytes, mode: int) -> None:
        """Write `data` where `rel` will appear once the transaction commits. Safe to call from
        several threads. UnsafeLocalPath when a link or a non-directory is on the way."""
        with _translated(rel, "write"):
            self._stage(rel, data, mode)

    def _stage(self, rel: str, data: bytes, mode: int) -> None:
        parent_rel, _, name = rel.rpartition("/")
        with self._lock:
            inside = self._new_dir(parent_rel) if parent_rel else None
            parent = inside if inside is not None else self._open_dir(parent_rel)
            assert parent is not None
            if inside is None:
                self._refuse_non_file(rel, name, parent)
                disk_name = self._tmp_name()
                self._staged.append(_Staged(rel, parent, disk_name, name))
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
                view = view[os.write(fd, view) :]
            if mode & 0o777 & self._umask:
                os.fchmod(fd, mode & 0o777)
        finally:
            os.close(fd)

    def delete(self, rel: str) -> None:
        """Delete `rel` when the transaction commits. Deletes are named before anything is
        staged: a file deleted here may give its place to a new directory, and a directory
        this transaction empties to a file."""
        self._deletes.append(rel)
        self._deleting.add(rel)

    def _refuse_non_file(self, rel: str, name: str, parent: int) -> None:
        """UnsafeLocalPath when something other than a regular file stands where `rel` goes,
        but for a directory that the deletes of this transaction leave empty."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISREG(st.st_mode):
            return
        if stat.S_ISDIR(st.st_mode) and self._emptied(rel):
            self._emptying.add(rel)
            return
        raise UnsafeLocalPath(
            f"{rel} is a symbolic link, a directory or a device here; fileconsul leaves it"
        )

    def _emptied(self, rel_dir: str) -> bool:
        """Whether every entry below the directory `rel_dir` is a directory or a file this
        transaction deletes (so that, once they are, it is removed)."""
        fd = self._open_dir(rel_dir)
        if fd is None:
            return False
        with os.scandir(fd) as entries:
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    if not self._emptied(rel):
                        return False
                elif not (entry.is_file(follow_symlinks=False) and rel in self._deleting):
                    return False
        return True

    def remove_leftover(self, rel: str) -> None:
        """Remove a temporary file or directory an interrupted pull left (never through a
        link: rmtree with a directory descriptor does not follow them)."""
        with suppress(OSError, UnsafeLocalPath):
            parent, name = self._parent(rel)
            if parent is None or not name.startswith(TMP_PREFIX):
                return
            if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                shutil.rmtree(name, dir_fd=parent)
            else:
                os.unlink(name, dir_fd=parent)

    # -- commit ---------------------------------------------------------------------------

    def commit(self, expected: Mapping[str, StatKey]) -> None:
        """Check that no path to change moved since it was scanned (`expected`: its stat
        then; absent: no file), make the staged files durable, rename them in and delete
        what was planned. ConflictError, with nothing changed, when a path moved."""
        paths = [s.rel for s in self._staged if not s.is_dir] + self._deletes
        moved = self._moved(paths, expected)
        if moved:
            raise ConflictError(
                f"{moved[0]} changed locally during the pull; nothing was changed (run pull again)"
            )
        with _translated("the staged files", "make durable"):
            self._durable()
        if self._undo is not None:
            with _translated("the files it replaces", "keep a copy of"):
                self._keep_backups(self._undo)
        self._committed = True
        for rel in self._deletes:
            with _translated(rel, "delete", _PARTWAY):
                self._delete(rel)
        for rel in self._deletes:
            self._prune(rel.rpartition("/")[0])
        while self._staged:
            item = self._staged[-1]
            with _translated(item.rel, "rename into place", _PARTWAY):
                os.rename(item.tmp_name, item.name, src_dir_fd=item.dir_fd, dst_dir_fd=item.dir_fd)
            self._staged.pop()
        with _translated("the changed directories", "make durable", _PARTWAY):
            self._sync_dirs()

    def _keep_backups(self, log: putback.UndoLog) -> None:
        """Link each file the commit replaces to a backup, then write the journal: before any
        rename, so that every state a crash can leave is one the journal puts back. The
        deletes come first, as the commit does them: put back in reverse, a directory that
        took a deleted file's place goes before the file comes back."""
        log.clear()
        for rel in self._deletes:
            log.entries.append(putback.Entry("deleted", rel, self._tmp_name()))
        for item in self._staged:
            if item.is_dir:
                log.entries.append(putback.Entry("newdir", item.rel))
                continue
            backup = self._tmp_name()
            kept = log.keep(self.parent, item.rel, backup)
            kind: putback.Kind = "replaced" if kept else "added"
            log.entries.append(putback.Entry(kind, item.rel, backup if kept else None))
        log.write()

    def finish(self) -> None:
        """Keep what was committed: drop the backups."""
        if self._undo is not None and self._committed:
            with _translated("the kept copies", "remove", _PARTWAY):
                self._undo.finish()
        self._committed = False

    def put_back(self) -> None:
        """Every path as it was before the commit."""
        if self._undo is not None and self._committed:
            with _translated("the files it changed", "put back", _PARTWAY):
                self._undo.put_back(self.parent)
        self._committed = False

    def _moved(self, paths: list[str], expected: Mapping[str, StatKey]) -> list[str]:
        """Which of `paths` no longer stand as `expected`, and which new directories had their
        place taken since staging began."""
        taken = []
        for item in self._staged:
            # A new directory's place may hold a file this transaction deletes (checked as a
            # delete below), else nothing.
            if item.is_dir and item.rel not in self._deleting:
                with suppress(FileNotFoundError):
                    os.stat(item.name, dir_fd=item.dir_fd, follow_symlinks=False)
                    taken.append(item.rel)
        for path in paths:
            # A file of a new directory is still absent while that directory's place is free;
            # a directory a file replaces is checked through the deletes that empty it.
            if path not in expected and path.rpartition("/")[0] in self._inside:
                continue
            if path in self._emptying:
                continue
            if self.current(path) != expected.get(path):
                taken.append(path)
        return taken

    def current(self, rel: str) -> StatKey | None:
        """The stat key of what is at `rel` (-1s for anything but a regular file, so that it
        never matches a scanned file's), None when absent."""
        try:
            parent, name = self._parent(rel)
        except UnsafeLocalPath:
            return _NOT_A_FILE
        if parent is None:
            return None
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return stat_key(st) if stat.S_ISREG(st.st_mode) else _NOT_A_FILE

    def _durable(self) -> None:
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

    def _delete(self, rel: str) -> None:
        parent, name = self._parent(rel)
        if parent is None:
            return
        if self._undo is not None:
            # Set aside, not deleted, until the commit is finished or put back.
            backup = next(e.backup for e in self._undo.entries if e.rel == rel and e.backup)
            self._undo.set_aside(self.parent, rel, backup)
            return
        with suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent)

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

    def _sync_dirs(self) -> None:
        """Make the renames and deletes durable: one syncfs for many directories, else an
        fsync of each."""
        if len(self._dirs) >= _SYNCFS_FROM and self._syncfs():
            return
        for fd in self._dirs.values():
            os.fsync(fd)

    def _syncfs(self) -> bool:
        with self._lock:
            root = self._open_dir("")
        syncfs = _syncfs()
        return root is not None and syncfs is not None and syncfs(root) == 0

    # -- the end --------------------------------------------------------------------------

    def close(self) -> None:
        """Discard what was staged and not committed, put back a commit that was kept and
        not finished, and close every descriptor."""
        self.put_back()
        if self._undo is not None:
            self._undo.close()
        for item in self._staged:
            with suppress(OSError):
                if item.is_dir:
                    shutil.rmtree(item.tmp_name, dir_fd=item.dir_fd)
                else:
                    os.unlink(item.tmp_name, dir_fd=item.dir_fd)
        self._staged.clear()
        for fd in [*self._dirs.values(), *self._inside.values()]:
            os.close(fd)
        self._dirs.clear()
        self._inside.clear()


_NOT_A_FILE: StatKey = (-1, -1, -1, -1)


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
