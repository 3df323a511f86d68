"""A tree's history as operators use it: its revisions (`log`, `show`), and the tree and the
contents of any revision still kept."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from fileconsul.commands.context import Context
from fileconsul.errors import IntegrityError, InvalidInput, UsageError
from fileconsul.model import records
from fileconsul.model.facts import FileInfo, content_hash
from fileconsul.model.records import Commit, Head
from fileconsul.model.seal import Signer, signer
from fileconsul.model.tree import RemoteTree
from fileconsul.store import read
from fileconsul.store.batching import batches
from fileconsul.store.client import TxnFailed
from fileconsul.store.layout import blob_key, content_key, log_key
from fileconsul.store.ops import TXN_MAX_OPS


@dataclass(frozen=True)
class Unreadable:
    """A kept revision whose record is corrupt: the others are still listed."""

    revision: int
    reason: str


@dataclass
class Log:
    prefix: str
    head: Head | None
    #: The records asked for, newest first.
    commits: list[Commit] = field(default_factory=list)
    #: The revisions asked for whose records cannot be read.
    unreadable: list[Unreadable] = field(default_factory=list)


def log(ctx: Context, limit: int | None = None) -> Log:
    """The retained revisions, newest first (the last `limit` of them)."""
    head = read.read_head(ctx.client, ctx.prefix, stale=ctx.stale)
    if head is None:
        return Log(ctx.prefix, None)
    first = head.oldest if limit is None else max(head.oldest, head.revision - limit + 1)
    commits, unreadable = _records(ctx, range(first, head.revision + 1))
    return Log(ctx.prefix, head, sorted(commits, key=lambda c: -c.revision), unreadable)


def _records(ctx: Context, revisions: Iterable[int]) -> tuple[list[Commit], list[Unreadable]]:
    """The records of `revisions` that are kept (one falling out meanwhile is left out), and
    those that cannot be read."""
    keys = {log_key(ctx.prefix, r): r for r in revisions}
    found, unreadable = [], []
    for batch in batches(list(keys), lambda _: 1, count=TXN_MAX_OPS, total=TXN_MAX_OPS):
        for key, value in ctx.client.values_of(batch, stale=ctx.stale).items():
            try:
                found.append(read.decode_record(key, value, keys[key]))
            except IntegrityError as exc:
                unreadable.append(Unreadable(keys[key], str(exc)))
    return found, sorted(unreadable, key=lambda u: -u.revision)


def signer_of(ctx: Context, head: Head, commit: Commit) -> Signer | None:
    """Who signed a revision, and whether this node trusts that signature (None: unsigned)."""
    return signer(ctx.prefix, head.history, commit, ctx.trust)


def commit_of(ctx: Context, revision: int) -> tuple[Head, Commit]:
    """The head, and revision `revision`'s record; InvalidInput when it is not kept,
    IntegrityError when it is corrupt."""
    head = _head(ctx)
    _check_kept(head, revision, "shown")
    found, unreadable = _records(ctx, [revision])
    if unreadable:
        raise IntegrityError(unreadable[0].reason)
    if not found:
        raise InvalidInput(f"revision {revision} is no longer kept (the oldest is {head.oldest})")
    return head, found[0]


def _head(ctx: Context) -> Head:
    head = read.read_head(ctx.client, ctx.prefix, stale=ctx.stale)
    if head is None:
        raise InvalidInput(f"{ctx.prefix} has no revision yet (push one first)")
    return head


def _check_kept(head: Head, revision: int, what: str) -> None:
    if revision < head.since or revision > head.revision:
        raise UsageError(
            f"there is no revision {revision}: the revisions are {head.since} to "
            f"{head.revision} (of which {head.oldest} to {head.revision} are kept), so it "
            f"cannot be {what}"
        )
    if revision < head.oldest:
        raise InvalidInput(
            f"revision {revision} is no longer kept, so it cannot be {what}; the oldest "
            f"revision that can be is {head.oldest} (nothing was changed)"
        )


@dataclass
class Past:
    """The history from the head back to some revision: the head's tree, and every record
    since that revision, from which any tree between is known and its contents found."""

    tree: RemoteTree
    #: The records after the earliest revision asked for, by revision.
    commits: dict[int, Commit]

    @property
    def head(self) -> Head:
        assert self.tree.head is not None
        return self.tree.head

    @functools.cached_property
    def _live(self) -> dict[str, str]:
        """Each content the tree holds now, by hash: the key that holds it."""
        tree = self.tree
        return {info.hash: content_key(tree, path) for path, info in tree.files.items()}

    def files_at(self, revision: int) -> dict[str, FileInfo]:
        """The committed tree of `revision`: the head's, with the records since undone."""
        files = dict(self.tree.committed)
        for later in range(self.head.revision, revision, -1):
            records.backward(files, self.commits[later].changes)
        return files

    def key_of(self, info: FileInfo) -> str | None:
        """Where a content is kept: a file's own key while the tree holds it, else under the
        revision that replaced it (None: nowhere any more)."""
        live = self._live.get(info.hash)
        if live is not None:
            return live
        for revision in sorted(self.commits):
            for change in self.commits[revision].changes:
                if change.old is not None and change.old.hash == info.hash:
                    replaced = change.new is None or change.new.hash != info.hash
                    if replaced and revision > self.head.oldest:
                        return blob_key(self.tree.prefix, revision, info.hash)
        return None


def past(
    ctx: Context, *revisions: int, known: RemoteTree | None = None, what: str = "restored"
) -> Past:
    """The history back to the earliest of `revisions`, each of which must still be kept
    (else nothing can be `what`)."""
    tree = known or read.read(ctx.client, ctx.prefix, lock_wait=ctx.lock_wait, stale=ctx.stale)
    if tree.head is None:
        raise InvalidInput(f"{ctx.prefix} has no revision yet (push one first)")
    for asked in revisions:
        _check_kept(tree.head, asked, what)
    revision = min(revisions)
    try:
        commits = list(
            read.read_commits(ctx.client, ctx.prefix, range(revision + 1, tree.revision + 1))
        )
    except TxnFailed as exc:
        raise InvalidInput(
            f"a record after revision {revision} is no longer kept; try a later revision"
        ) from exc
    return Past(tree, {c.revision: c for c in commits})


class Contents(NamedTuple):
    #: The bytes of each path whose key holds what its hash says.
    found: dict[str, bytes]
    #: The paths whose key holds something else: the content kept there is corrupt.
    corrupt: set[str]


def contents(ctx: Context, wanted: Mapping[str, tuple[str, str]]) -> Contents:
    """The bytes of each path -> (key that keeps them, their hash), where they match."""
    result = Contents({}, set())
    items = sorted(wanted.items())
    for batch in batches(items, lambda _: 1, count=TXN_MAX_OPS, total=TXN_MAX_OPS):
        values = ctx.client.values_of([key for _, (key, _) in batch], stale=ctx.stale)
        for path, (key, digest) in batch:
            value = values.get(key)
            if value is not None and content_hash(value) == digest:
                result.found[path] = value
            elif value is not None:
                result.corrupt.add(path)
    return result
