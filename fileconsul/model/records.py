"""A tree's history: commit records (who, when, why, and each path's facts before and after)
and the head that names the last revision.

A record lists each change with the file's facts before and after it, so that a revision's
tree follows from a later one by undoing the records between them, and a node a few revisions
behind catches up by reading only those records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from fileconsul.model import columns, facts, manifest
from fileconsul.model.facts import ChangeKind, FileInfo, Files, classify
from fileconsul.model.manifest import FILE_COLUMNS, check_format
from fileconsul.model.seal import STRONG_DIGITS, Seal, Signature

#: Revisions kept (their records and the contents they replaced), unless --keep says otherwise.
DEFAULT_KEEP = 100
#: A head carries its commit's changes when there are at most this many, so that a watcher one
#: revision behind reads nothing else before the values.
INLINE_CHANGES = 32
_LETTERS: dict[ChangeKind, str] = {"added": "a", "modified": "m", "deleted": "d", "mode": "x"}
_KINDS: dict[str, ChangeKind] = {letter: kind for kind, letter in _LETTERS.items()}


class Change(NamedTuple):
    path: str
    kind: ChangeKind
    old: FileInfo | None
    new: FileInfo | None
    #: In a signed commit: the SHA-256 of the content before and after ("" when absent).
    old_strong: str = ""
    new_strong: str = ""


def diff(before: Files, after: Files) -> list[Change]:
    """Every path whose facts differ between two trees, sorted."""
    moved = {p for p, _ in before.items() ^ after.items()}
    changes = []
    for path in sorted(moved):
        old, new = before.get(path), after.get(path)
        kind = classify(old, new)
        if kind is not None:
            changes.append(Change(path, kind, old, new))
    return changes


def forward(files: dict[str, FileInfo], changes: Iterable[Change]) -> None:
    """Apply `changes` to `files`, in place."""
    facts.update(files, ((c.path, c.new) for c in changes))


def backward(files: dict[str, FileInfo], changes: Iterable[Change]) -> None:
    """Undo `changes` on `files`, in place."""
    facts.update(files, ((c.path, c.old) for c in changes))


def digest_after(before: str, changes: Iterable[Change]) -> str:
    return manifest.digest_after(before, ((c.path, c.old, c.new) for c in changes))


def _encode_changes(changes: Sequence[Change], *, signed: bool = False) -> dict[str, Any]:
    table = {
        "paths": [c.path for c in changes],
        "kinds": "".join(_LETTERS[c.kind] for c in changes),
        "old": columns.encode_rows([c.old for c in changes if c.old], FILE_COLUMNS),
        "new": columns.encode_rows([c.new for c in changes if c.new], FILE_COLUMNS),
    }
    if signed:
        table["old_strong"] = "".join(c.old_strong for c in changes if c.old)
        table["new_strong"] = "".join(c.new_strong for c in changes if c.new)
    return table


def _strong_column(table: Any, name: str, count: int) -> list[str]:
    raw = table.get(name, "")
    if not isinstance(raw, str) or len(raw) != STRONG_DIGITS * count:
        raise ValueError(f"malformed changes: {name}")
    bytes.fromhex(raw)
    return [raw[i : i + STRONG_DIGITS] for i in range(0, len(raw), STRONG_DIGITS)]


def _decode_changes(table: Any, *, signed: bool = False) -> tuple[Change, ...]:
    paths = columns.paths_of(table)
    kinds = table.get("kinds")
    if not isinstance(kinds, str) or len(kinds) != len(paths) or set(kinds) - set(_KINDS):
        raise ValueError("malformed changes: kinds")
    with_old = sum(k != "a" for k in kinds)
    with_new = sum(k != "d" for k in kinds)
    olds = iter(columns.decode_rows(table["old"], FILE_COLUMNS, with_old, FileInfo))
    news = iter(columns.decode_rows(table["new"], FILE_COLUMNS, with_new, FileInfo))
    old_strong = iter(_strong_column(table, "old_strong", with_old) if signed else ())
    new_strong = iter(_strong_column(table, "new_strong", with_new) if signed else ())
    return tuple(
        Change(
            path,
            _KINDS[letter],
            None if letter == "a" else next(olds),
            None if letter == "d" else next(news),
            "" if letter == "a" else next(old_strong, ""),
            "" if letter == "d" else next(new_strong, ""),
        )
        for path, letter in zip(paths, kinds, strict=True)
    )


@dataclass(frozen=True)
class Commit:
    """One revision: who made it, when, why, and its changes."""

    revision: int
    time: str
    node: str
    user: str
    message: str
    changes: tuple[Change, ...]
    #: The tree once committed: how many files, and its digest.
    files: int
    digest: str
    #: The revision whose tree this one restored, for a rollback.
    rollback_of: int | None = None
    #: What a signed commit adds (its parent, its manifest's hash, its tables); None when
    #: it is not signed.
    seal: Seal | None = None
    #: The signature over its id (`seal.revision_id`), in its record and its head.
    signature: Signature | None = None

    def fields(self) -> dict[str, Any]:
        """Its facts but the changes, as the record and the head both carry them."""
        found = {
            "format": manifest.FORMAT,
            "revision": self.revision,
            "time": self.time,
            "node": self.node,
            "user": self.user,
            "message": self.message,
            "files": self.files,
            "digest": self.digest,
            "rollback_of": self.rollback_of,
        }
        if self.seal is not None:
            found["seal"] = self.seal.encode()
        if self.signature is not None:
            found["signature"] = self.signature.encode()
        return found

    def encoded_changes(self) -> dict[str, Any]:
        return _encode_changes(self.changes, signed=self.seal is not None)

    def encode(self, *, max_size: int) -> bytes:
        body = {**self.fields(), "changes": self.encoded_changes()}
        return manifest.pack(body, f"record of revision {self.revision}", max_size)

    @classmethod
    def decode(cls, value: bytes, revision: int) -> Commit:
        return _commit(manifest.unpack(value, "commit record"), revision, require_changes=True)


def _commit(data: Any, revision: int, *, require_changes: bool) -> Commit:
    check_format(data, "commit record")
    try:
        if data["revision"] != revision:
            raise ValueError(f"the record is of revision {data['revision']}, not {revision}")
        raw = data.get("changes")
        if raw is None and require_changes:
            raise ValueError("the record lists no changes")
        rollback = data.get("rollback_of")
        seal = None if data.get("seal") is None else Seal.decode(data["seal"])
        signed = data.get("signature")
        return Commit(
            revision=int(data["revision"]),
            time=str(data["time"]),
            node=str(data["node"]),
            user=str(data["user"]),
            message=str(data["message"]),
            changes=() if raw is None else _decode_changes(raw, signed=seal is not None),
            files=int(data["files"]),
            digest=str(data["digest"]),
            rollback_of=None if rollback is None else int(rollback),
            seal=seal,
            signature=None if signed is None else Signature.decode(signed),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed commit record: {exc!r}") from exc


@dataclass(frozen=True)
class Head:
    """The last revision, small enough for every watcher to block on: its commit (with its
    changes when they are few), and how much history is kept."""

    commit: Commit
    #: Whether `commit.changes` are all of them (else they are in the record alone).
    inline: bool
    keep: int
    #: The oldest revision whose tree can still be restored.
    oldest: int
    #: The head key's ModifyIndex: the index the commit landed at.
    index: int = 0
    #: This history's name, and its first revision: a history started over one whose head
    #: was lost numbers its revisions after the old ones, and never reads them.
    history: str = ""
    since: int = 1
    #: The datacenter this tree is a replica of (its replicator alone commits here).
    source: str | None = None

    @property
    def revision(self) -> int:
        return self.commit.revision

    @property
    def signature(self) -> Signature | None:
        return self.commit.signature

    def encode(self) -> bytes:
        body = {
            **self.commit.fields(),
            "keep": self.keep,
            "oldest": self.oldest,
            "history": self.history,
            "since": self.since,
            "changes": self.commit.encoded_changes() if self.inline else None,
        }
        if self.source is not None:
            body["replica_of"] = self.source
        return json.dumps(body, separators=(",", ":")).encode()

    def genesis(self) -> bytes:
        """What the genesis key holds: the history this head belongs to. It outlives a
        deleted head, so that a new history knows an old one was there."""
        body = {"format": manifest.FORMAT, "history": self.history, "since": self.since}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes, index: int) -> Head:
        """ValueError when it is corrupt; NewerFormat when a newer fileconsul wrote it."""
        try:
            data = json.loads(value)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"unreadable head: {exc}") from exc
        check_format(data, "head")
        commit = _commit(data, data.get("revision"), require_changes=False)
        try:
            keep, oldest = int(data["keep"]), int(data["oldest"])
            history, since = str(data.get("history") or ""), int(data.get("since") or 1)
            source = None if data.get("replica_of") is None else str(data["replica_of"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed head: {exc!r}") from exc
        inline = data.get("changes") is not None
        return cls(commit, inline, keep, oldest, index, history, since, source)


class Author(NamedTuple):
    """Who makes a commit, and when (UTC, ISO 8601)."""

    node: str
    user: str
    time: str


def new_commit(
    revision: int,
    changes: Sequence[Change],
    after: Files,
    digest: str,
    *,
    author: Author,
    message: str,
    rollback_of: int | None = None,
) -> Commit:
    """The record of a new revision whose tree is `after` (of digest `digest`)."""
    return Commit(
        revision=revision,
        time=author.time,
        node=author.node,
        user=author.user,
        message=message,
        changes=tuple(changes),
        files=len(after),
        digest=digest,
        rollback_of=rollback_of,
    )


def new_head(commit: Commit, *, keep: int, history: str, since: int = 1) -> Head:
    """The head of `commit`, in the history named `history` that began at revision `since`:
    the oldest revision it keeps is never one of an older history."""
    inline = len(commit.changes) <= INLINE_CHANGES
    shown = commit if inline else replace(commit, changes=())
    oldest = max(since, commit.revision - keep + 1)
    return Head(shown, inline, keep, oldest, history=history, since=since)
