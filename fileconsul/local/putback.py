"""Putting the local tree back exactly as it was before an apply: what `--check` does when it
rejects a change, and what the next run does after a crash between an apply and its check.

Before the first rename, each file the apply replaces or deletes is hard-linked to a backup
in `<basepath>/.fileconsul/putback/` (same inode: same bytes, same mode; outside the tree, so
that a check that reads every file of a directory never sees it), and a journal listing every
path the apply touches is made durable in `<basepath>/.fileconsul/`. Putting back removes each
file and directory the apply added, renames each backup over its path (re-creating a
directory the apply removed), and drops the journal; keeping the apply removes the backups and
the journal.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fileconsul.model.paths import INTERNAL_DIR

Kind = Literal["replaced", "added", "newdir", "deleted"]
#: Opens the directory holding a relative path: its descriptor (None when it is missing) and
#: the path's last segment. With `make`, missing directories on the way are created.
Parent = Callable[[str, bool], tuple[int | None, str]]


def journal_path(root: Path) -> Path:
    return root / INTERNAL_DIR / "apply-journal.json"


def backups_path(root: Path) -> Path:
    return root / INTERNAL_DIR / "putback"


@dataclass
class Entry:
    kind: Kind
    rel: str
    #: The backup's name in the backups directory (replaced and deleted files).
    backup: str | None = None


@dataclass
class UndoLog:
    """What an apply did, and how to take it back."""

    root: Path
    entries: list[Entry] = field(default_factory=list)
    _backups: int | None = None

    def backups(self) -> int:
        """The backups directory, opened (and created) once."""
        if self._backups is None:
            path = backups_path(self.root)
            path.mkdir(parents=True, exist_ok=True)
            self._backups = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._backups

    def clear(self) -> None:
        """Remove backups no journal names (a crash before its journal was written left
        them): the next run put back whatever a journal named before this apply began."""
        for name in os.listdir(self.backups()):
            _quietly(os.unlink, name, dir_fd=self.backups())

    def keep(self, parent: Parent, rel: str, backup: str) -> bool:
        """Hard-link the regular file at `rel` (if there is one) to `backup`; whether there
        was one."""
        fd, name = parent(rel, False)
        if fd is None or not _is_file(fd, name):
            return False
        try:
            os.link(name, backup, src_dir_fd=fd, dst_dir_fd=self.backups(), follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def set_aside(self, parent: Parent, rel: str, backup: str) -> None:
        """Move the file at `rel` to `backup` (a delete that can be put back)."""
        fd, name = parent(rel, False)
        if fd is not None:
            _quietly(os.rename, name, backup, src_dir_fd=fd, dst_dir_fd=self.backups())

    def write(self) -> None:
        """Make the journal durable: from here on a crash is put back by the next run."""
        path = journal_path(self.root)
        body = [[e.kind, e.rel, e.backup] for e in self.entries]
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as handle:
            json.dump(body, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        os.fsync(self.backups())

    def put_back(self, parent: Parent) -> None:
        """Every path as it was before the apply, the last change first; then the journal
        goes."""
        for entry in reversed(self.entries):
            if entry.backup is not None:
                # Its directory may be gone (the apply put a file in its place, and removed
                # it again just now): made again, never through a link.
                fd, name = parent(entry.rel, True)
                assert fd is not None
                _quietly(os.rename, entry.backup, name, src_dir_fd=self.backups(), dst_dir_fd=fd)
            else:
                fd, name = parent(entry.rel, False)
                if fd is None:
                    continue
                if entry.kind == "newdir":
                    _quietly(shutil.rmtree, name, dir_fd=fd)
                elif _is_file(fd, name):
                    _quietly(os.unlink, name, dir_fd=fd)
            os.fsync(fd)
        self.drop()

    def finish(self) -> None:
        """Keep the apply: the backups go, then the journal."""
        for entry in self.entries:
            if entry.backup is not None:
                _quietly(os.unlink, entry.backup, dir_fd=self.backups())
        self.drop()

    def drop(self) -> None:
        journal_path(self.root).unlink(missing_ok=True)
        self.entries.clear()

    def close(self) -> None:
        if self._backups is not None:
            os.close(self._backups)
            self._backups = None


def pending(root: Path) -> UndoLog | None:
    """The journal of an apply a crash interrupted, if there is one."""
    try:
        body = json.loads(journal_path(root).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return UndoLog(root)  # a torn journal was never complete: nothing was renamed yet
    return UndoLog(root, [Entry(kind, rel, backup) for kind, rel, backup in body])


def _is_file(fd: int, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _quietly(action: Callable[..., object], *args: object, **kw: object) -> None:
    """Put back what is there to put back: a step a crash never reached has nothing to do."""
    with suppress(FileNotFoundError):
        action(*args, **kw)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
