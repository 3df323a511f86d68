"""A tree's history as operators use it: its revisions (`log`, `show`), the tree and the
contents of any revision still kept, and rolling back to one (`rollback`)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fileconsul import fleet, history, publish, remote
from fileconsul.batching import batches
from fileconsul.consul import TXN_MAX_OPS, TxnFailed
from fileconsul.errors import ConflictError, InvalidInput, UsageError
from fileconsul.fileinfo import FileInfo, content_hash
from fileconsul.history import Commit, Head
from fileconsul.keys import blob_key, file_key, log_key
from fileconsul.plan import Action, check_deletes, classify
from fileconsul.preflight import refuse_too_large
from fileconsul.remote import RemoteTree
from fileconsul.run import Run
from fileconsul.sync import Outcome


@dataclass
class Log:
    prefix: str
    head: Head | None
    #: The records asked for, newest first.
    commits: list[Commit] = field(default_factory=list)


def log(run: Run, limit: int | None = None) -> Log:
    """The retained revisions, newest first (the last `limit` of them)."""
    head = remote.read_head(run.client, run.prefix, stale=run.stale)
    if head is None:
        return Log(run.prefix, None)
    first = head.oldest if limit is None else max(head.oldest, head.revision - limit + 1)
    commits = _records(run, range(first, head.revision + 1))
    return Log(run.prefix, head, sorted(commits, key=lambda c: -c.revision))


def _records(run: Run, revisions: Iterable[int]) -> list[Commit]:
    """The records of `revisions` that are kept (one falling out meanwhile is left out)."""
    keys = {log_key(run.prefix, r): r for r in revisions}
    found = []
    for batch in batches(list(keys), lambda _: 1, count=TXN_MAX_OPS, total=TXN_MAX_OPS):
        for key, value in run.client.values_of(batch, stale=run.stale).items():
            found.append(Commit.decode(value, keys[key]))
    return found


def commit_of(run: Run, revision: int) -> tuple[Head, Commit]:
    """The head, and revision `revision`'s record; InvalidInput when it is not kept."""
    head = _head(run)
    _check_kept(head, revision, "shown")
    found = _records(run, [revision])
    if not found:
        raise InvalidInput(f"revision {revision} is no longer kept (the oldest is {head.oldest})")
    return head, found[0]


def _head(run: Run) -> Head:
    head = remote.read_head(run.client, run.prefix, stale=run.stale)
    if head is None:
        raise InvalidInput(f"{run.prefix} has no revision yet (push one first)")
    return head


def _check_kept(head: Head, revision: int, what: str) -> None:
    if revision < 1 or revision > head.revision:
        raise UsageError(
            f"there is no revision {revision}: the revisions are 1 to {head.revision} "
            f"(of which {head.oldest} to {head.revision} are kept)"
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
        return {
            info.hash: tree.sources.get(path, file_key(tree.prefix, path))
            for path, info in tree.files.items()
        }

    def files_at(self, revision: int) -> dict[str, FileInfo]:
        """The committed tree of `revision`: the head's, with the records since undone."""
        files = dict(self.tree.committed)
        for later in range(self.head.revision, revision, -1):
            history.backward(files, self.commits[later].changes)
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


def past(run: Run, revision: int, *, known: RemoteTree | None = None) -> Past:
    """The history back to `revision` (which must still be kept)."""
    tree = known or remote.read(run.client, run.prefix, lock_wait=run.lock_wait, stale=run.stale)
    if tree.head is None:
        raise InvalidInput(f"{run.prefix} has no revision yet (push one first)")
    _check_kept(tree.head, revision, "restored")
    try:
        commits = list(
            remote.read_commits(run.client, run.prefix, range(revision + 1, tree.revision + 1))
        )
    except TxnFailed as exc:
        raise InvalidInput(
            f"a record after revision {revision} is no longer kept; try a later revision"
        ) from exc
    return Past(tree, {c.revision: c for c in commits})


def contents(run: Run, wanted: Mapping[str, tuple[str, str]]) -> dict[str, bytes]:
    """The bytes of each path -> (key that keeps them, their hash): only those that match."""
    found: dict[str, bytes] = {}
    items = sorted(wanted.items())
    for batch in batches(items, lambda _: 1, count=TXN_MAX_OPS, total=TXN_MAX_OPS):
        values = run.client.values_of([key for _, (key, _) in batch], stale=run.stale)
        for path, (key, digest) in batch:
            value = values.get(key)
            if value is not None and content_hash(value) == digest:
                found[path] = value
    return found


# -- rollback ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollbackOptions:
    message: str = ""
    dry_run: bool = False
    force: bool = False
    max_delete: int | None = None
    node: str | None = None


def rollback(run: Run, revision: int, options: RollbackOptions) -> Outcome:
    """A new revision whose tree is exactly revision `revision`'s: contents, modes, and the
    files it did not have deleted. A commit like any push (check-and-set on the head, the
    delete cap); this node's files are not touched. ConflictError when another commit lands
    first."""
    back = past(run, revision)
    planned_at = back.tree.revision

    def replan(fresh: RemoteTree) -> publish.Prepared:
        # Under the lock, after a push that died was undone: the same head, planned again.
        if fresh.revision != planned_at:
            raise ConflictError(
                f"revision {fresh.revision} was committed meanwhile; nothing was rolled back "
                f"(look at it with `fileconsul log`, then roll back again)"
            )
        _, again = _prepare_rollback(run, past(run, revision, known=fresh), revision, options)
        assert again is not None
        return again

    actions, prepared = _prepare_rollback(run, back, revision, options)
    if prepared is None:
        return Outcome(actions, back.tree.revision, True, back.tree.warnings)
    prepared, head = publish.commit(run, prepared, replan, "rolling back")
    return Outcome(actions, head.revision, False, back.tree.warnings, committed=head)


def _prepare_rollback(
    run: Run, back: Past, revision: int, options: RollbackOptions
) -> tuple[list[Action], publish.Prepared | None]:
    """The actions that make the head's tree revision `revision`'s, and their commit (None
    for a dry run)."""
    tree = back.tree
    target = back.files_at(revision)
    actions = [
        Action(path, kind, target.get(path))
        for path in sorted(set(target) | set(tree.files))
        if (kind := classify(tree.files.get(path), target.get(path))) is not None
    ]
    check_deletes(
        actions,
        len(tree.files),
        max_delete=options.max_delete,
        force=options.force,
        side="in Consul",
    )
    if options.dry_run:
        return actions, None
    limit = run.client.max_value_size()
    refuse_too_large(actions, limit)
    wanted = {a.path: a.target for a in actions if a.target is not None}
    kept = {p: (key, info.hash) for p, info in wanted.items() if (key := back.key_of(info))}
    found = contents(run, kept)
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise InvalidInput(
            f"revision {revision} cannot be restored: the contents of {', '.join(missing[:5])}"
            f"{' and more' if len(missing) > 5 else ''} are no longer kept (another tool "
            "replaced them); nothing was changed"
        )
    prepared = publish.prepare(
        run,
        tree,
        actions,
        contents=found,
        limit=limit,
        node=fleet.node_name(run.client, options.node),
        message=options.message or f"roll back to revision {revision}",
        keep=back.head.keep,
        rollback_of=revision,
    )
    return actions, prepared
