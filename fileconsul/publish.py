"""The write side of Consul, mirroring `remote`'s read side: committing a new revision.

A commit writes the changed keys under `<prefix>/`, keeps the contents they replace (under
the revision that replaced them), writes the revision's record and manifest, and moves the
head with check-and-set: the head is what makes it committed.

A small commit is one transaction that also checks that no push holds the lock and that no
push left an uncommitted record: all of it or none. A larger one takes the lock, writes the
kept contents, the manifest and the record first (the record is also the journal of the push
under way), then the files in batches that each check the head has not moved, then the head.
A push that fails before its head lands is undone from its journal, by itself or, when it
died, by the next push; readers ignore its values meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import closing, suppress
from dataclasses import dataclass

from fileconsul import fileinfo, history, journal, remote, retention, scan
from fileconsul.batching import batches, in_flight
from fileconsul.consul import (
    TXN_MAX_BODY,
    TXN_MAX_OPS,
    Op,
    TxnFailed,
    encode_txn,
    kv_cas,
    kv_check_index,
    kv_check_not_exists,
    kv_delete,
    kv_delete_cas,
    kv_set,
)
from fileconsul.errors import ConflictError, FileconsulError
from fileconsul.fileinfo import FileInfo, Files, content_hash, hash_to_flags
from fileconsul.history import Change, Commit, Head
from fileconsul.keys import (
    blob_key,
    file_key,
    head_key,
    legacy_lock_key,
    legacy_manifest_key,
    lock_key,
    log_key,
    manifest_key,
)
from fileconsul.lock import Lease, push_lock
from fileconsul.manifest import digest, encode
from fileconsul.plan import Action
from fileconsul.remote import RemoteTree
from fileconsul.run import Run, Step
from fileconsul.writes import ENVELOPE, Write, b64_len, cost, write_of

#: Transactions a push keeps in flight at once.
IN_FLIGHT = 4
#: A value whose operation takes more than this goes alone (a PUT), not in a transaction.
_LARGE = TXN_MAX_BODY // 2
#: Bytes of values read per transaction (the contents a commit replaces).
_READ_BATCH = 4 * 1024 * 1024
_LOST = (
    "another push committed first; nothing of this push was committed (run status, then push again)"
)


@dataclass
class Prepared:
    """A commit, ready to send: the tree it was planned on, the tree it makes, its record and
    head, and every key it writes."""

    tree: RemoteTree
    after: dict[str, FileInfo]
    commit: Commit
    head: Head
    files: list[Write]
    #: The contents the commit replaces, kept under its revision (hash -> write).
    kept: list[Write]
    manifest: bytes
    record: bytes
    limit: int

    @property
    def revision(self) -> int:
        return self.commit.revision

    def _metadata(self) -> list[Write]:
        prefix = self.tree.prefix
        return [
            write_of(log_key(prefix, self.revision), None, self.record),
            write_of(manifest_key(prefix, self.revision), None, self.manifest),
        ]

    @property
    def single(self) -> bool:
        """Everything fits one transaction beside its checks and the head."""
        writes = [*self.files, *self.kept, *self._metadata()]
        ops = len(_unlocked_guards(self)) + len(writes) + len(_head_ops(self))
        body = sum(w.cost for w in writes) + b64_len(len(self.manifest) + len(self.record))
        return ops <= TXN_MAX_OPS and body + 4 * ENVELOPE < TXN_MAX_BODY


def files_after(tree_files: Files, actions: Sequence[Action]) -> dict[str, FileInfo]:
    """The tree once `actions` are applied to it."""
    files = dict(tree_files)
    fileinfo.update(files, ((a.path, a.target) for a in actions))
    return files


def prepare(
    run: Run,
    tree: RemoteTree,
    actions: Sequence[Action],
    *,
    contents: Mapping[str, bytes],
    limit: int,
    node: str,
    message: str,
    keep: int,
    rollback_of: int | None = None,
) -> Prepared:
    """The commit of `actions` on `tree` (keys another tool wrote are adopted with it):
    its record, head, manifest, the keys it writes and the contents it replaces."""
    prefix = tree.prefix
    after = files_after(tree.files, actions)
    changed = {a.path for a in actions}
    files = [
        write_of(file_key(prefix, a.path), a.target, contents.get(a.path), a.path) for a in actions
    ]
    files += [
        write_of(file_key(prefix, p), tree.files[p], tree.values[p], p)
        for p in sorted(tree.adopt - changed)
        if p in tree.values and p in after
    ]
    changes = history.diff(tree.committed, after)
    revision = tree.revision + 1
    if tree.head is not None and not tree.unknown:
        new_digest = history.digest_after(tree.head.commit.digest, changes)
    else:
        new_digest = digest(after)
    commit = history.new_commit(
        revision, changes, after, new_digest, node=node, message=message, rollback_of=rollback_of
    )
    head = history.new_head(commit, keep=keep)
    kept = _kept(run, tree, changes, revision, keep)
    return Prepared(
        tree,
        after,
        commit,
        head,
        files,
        kept,
        encode(after, revision, max_size=limit),
        commit.encode(max_size=limit),
        limit,
    )


def _kept(
    run: Run, tree: RemoteTree, changes: Sequence[Change], revision: int, keep: int
) -> list[Write]:
    """The committed contents `changes` replace or delete, read from Consul, to keep under
    `revision`: history costs what changes. A content another tool already replaced cannot be
    kept (a rollback past it is refused)."""
    replaced = {
        c.old.hash: c
        for c in changes
        if c.old is not None and (c.new is None or c.new.hash != c.old.hash)
    }
    if not replaced or keep < 1:
        return []
    found = _read_contents(run, tree, list(replaced.values()))
    return [
        write_of(blob_key(tree.prefix, revision, digest_), FileInfo(digest_, len(data)), data)
        for digest_, data in sorted(found.items())
    ]


def _read_contents(run: Run, tree: RemoteTree, changes: list[Change]) -> dict[str, bytes]:
    """The committed content of each change's old state, by hash, where it can still be
    read: a value read already, the key itself, or where a push that did not commit kept it."""
    found: dict[str, bytes] = {}
    wanted: list[tuple[str, str]] = []
    for change in changes:
        assert change.old is not None
        value = tree.values.get(change.path)
        if value is not None and content_hash(value) == change.old.hash:
            found[change.old.hash] = value
        else:
            source = tree.sources.get(change.path, file_key(tree.prefix, change.path))
            wanted.append((source, change.old.hash))
    sizes = {c.old.hash: c.old.size for c in changes if c.old is not None}
    for batch in batches(wanted, lambda w: sizes[w[1]], count=TXN_MAX_OPS, total=_READ_BATCH):
        values = run.client.values_of([key for key, _ in batch])
        for key, digest_ in batch:
            value = values.get(key)
            if value is not None and content_hash(value) == digest_:
                found[digest_] = value
    return found


# -- committing -------------------------------------------------------------------------------


def commit(
    run: Run,
    prepared: Prepared,
    replan: Callable[[RemoteTree], Prepared] | None,
    label: str,
) -> tuple[Prepared, Head]:
    """Commit `prepared`: as one transaction when it is small, else under the lock. Under the
    lock, a push that died without committing is undone first, and when the tree moved since
    `prepared` was planned, `replan` plans again on it (without one: ConflictError). What was
    committed, and its head."""
    head = write_unlocked(run, prepared) if prepared.single else None
    if head is not None:
        return prepared, head
    with push_lock(run) as lease:
        fresh = _read_locked(run, prepared.tree, lease.session)
        if not _plans_like(fresh, prepared.tree):
            if replan is None:
                raise ConflictError(
                    f"the tree moved to revision {fresh.revision} since revision "
                    f"{prepared.tree.revision} was read; nothing was committed (look again, "
                    "then run the command again)"
                )
            prepared = replan(fresh)
        with run.progress(label, len(prepared.files)) as step:
            return prepared, write_locked(run, lease, prepared, step)


def _read_locked(run: Run, tree: RemoteTree, session: str) -> RemoteTree:
    """The tree as it stands under the lock, once any push that died without committing has
    been undone from its record."""
    while True:
        fresh = remote.read(
            run.client,
            run.prefix,
            known=tree.remote_state,
            known_revision=tree.revision,
            lock_wait=run.lock_wait,
            session=session,
        )
        entry, _ = run.client.get(log_key(run.prefix, fresh.revision + 1))
        if entry is None:
            return fresh
        record = history.Commit.decode(entry.value, fresh.revision + 1)
        journal.repair(run, run.prefix, record, head_check(fresh))


def _plans_like(fresh: RemoteTree, tree: RemoteTree) -> bool:
    """Whether a commit planned on `tree` plans the same on `fresh`."""
    return (
        fresh.commit_index == tree.commit_index
        and fresh.files == tree.files
        and fresh.adopt == tree.adopt
        and fresh.uncommitted == tree.uncommitted
    )


# -- the small commit: one transaction --------------------------------------------------------


def _guards(prepared: Prepared) -> list[Op]:
    """What a commit checks: that the head is the one it was planned on (and, for a tree of
    the first format, its manifest too), and that no push left an uncommitted record."""
    tree = prepared.tree
    prefix = tree.prefix
    ops = [kv_check_not_exists(log_key(prefix, prepared.revision))]
    if tree.legacy_index:
        ops.append(kv_check_index(legacy_manifest_key(prefix), tree.legacy_index))
    return ops


def _unlocked_guards(prepared: Prepared) -> list[Op]:
    """A commit without the lock also checks that no push holds it (nor, on a tree of the
    first format, the first format's lock)."""
    prefix = prepared.tree.prefix
    ops = [kv_check_not_exists(lock_key(prefix))]
    if prepared.tree.head is None:
        ops.append(kv_check_not_exists(legacy_lock_key(prefix)))
    return ops + _guards(prepared)


def _head_ops(prepared: Prepared) -> list[Op]:
    """Moving the head (check-and-set: two commits never both land) and retiring a
    first-format manifest."""
    tree = prepared.tree
    value = prepared.head.encode()
    index = tree.head.index if tree.head is not None else 0
    ops = [kv_cas(head_key(tree.prefix), value, hash_to_flags(content_hash(value)), index)]
    if tree.legacy_index:
        ops.append(kv_delete_cas(legacy_manifest_key(tree.prefix), tree.legacy_index))
    return ops


def write_unlocked(run: Run, prepared: Prepared) -> Head | None:
    """The common small push: one transaction that also checks no push holds a lock, so it
    needs no session. The new head; None when it lost (a lock was held, a record was left,
    or the head moved), for the caller to take the locked path."""
    writes = [*prepared.files, *prepared.kept, *prepared._metadata()]
    ops = [*_unlocked_guards(prepared), *_ops(run, prepared, writes)]
    try:
        index = _txn(run, [*ops, *_head_ops(prepared)])
    except TxnFailed:
        return None
    retention.collect(run, prepared.head)
    return _landed(prepared, index)


def _landed(prepared: Prepared, index: int) -> Head:
    head = prepared.head
    return Head(head.commit, head.inline, head.keep, head.oldest, index)


# -- the large commit: under the lock ---------------------------------------------------------


def write_locked(run: Run, lease: Lease, prepared: Prepared, step: Step) -> Head:
    """Write under the lock and move the head; the new head. ConflictError when the head
    moved after all (another tool wrote it). A failure before the head lands undoes what was
    written, as far as Consul can be reached."""
    landed = None
    try:
        _send_metadata(run, lease, prepared)
        _send_files(run, lease, prepared, step)
        lease.renew_if_due()
        landed = _landed(prepared, _txn(run, _head_ops(prepared)))
    except TxnFailed as exc:
        _undo(run, prepared)
        raise ConflictError(_LOST) from exc
    except BaseException:
        landed = _check_landed(run, prepared)
        if landed is None:
            with suppress(FileconsulError):
                _undo(run, prepared)
            raise
    retention.collect(run, landed)
    return landed


def _send_metadata(run: Run, lease: Lease, prepared: Prepared) -> None:
    """The contents kept, then the manifest and the record: the journal of this push, from
    which it is undone if it never commits."""
    head = _check_head(prepared)
    _send(run, lease, prepared, prepared.kept, [head], lambda count: None)
    record, manifest = prepared._metadata()
    if record.cost + manifest.cost + 4 * ENVELOPE < TXN_MAX_BODY:
        _txn(run, [head, *_guards(prepared), *_ops(run, prepared, [record, manifest])])
        return
    for write in (manifest, record):
        if write.cost > _LARGE:
            # Created only if absent: the journal is the guard a transaction would check.
            assert write.value is not None
            if not run.client.put(write.key, write.value, cas=0):
                raise TxnFailed(f"{write.key} exists already", [])
        else:
            _txn(run, [head, *_guards(prepared), _op(run, write, prepared.limit)])


def _send_files(run: Run, lease: Lease, prepared: Prepared, step: Step) -> None:
    _send(run, lease, prepared, prepared.files, [_check_head(prepared)], step)


def _check_head(prepared: Prepared) -> Op:
    return head_check(prepared.tree)


def head_check(tree: RemoteTree) -> Op:
    """A check that the head is still the one `tree` was read at."""
    if tree.head is None:
        return kv_check_not_exists(head_key(tree.prefix))
    return kv_check_index(head_key(tree.prefix), tree.head.index)


def _send(
    run: Run,
    lease: Lease,
    prepared: Prepared,
    writes: Sequence[Write],
    checks: list[Op],
    step: Step,
) -> None:
    """`writes` in transactions that each carry `checks`, several in flight (they touch
    disjoint keys); a value too large to share a transaction goes as its own PUT."""
    small = [w for w in writes if w.cost <= _LARGE]
    room = TXN_MAX_OPS - len(checks)
    packed = batches(small, cost, count=room, total=TXN_MAX_BODY - 2 * ENVELOPE)

    def send(batch: list[Write]) -> int:
        _txn(run, encode_txn([*checks, *_ops(run, prepared, batch)]))
        return sum(1 for w in batch if w.path)

    sending = in_flight(send, packed, depth=IN_FLIGHT, name="fileconsul-push")
    with closing(sending) as sent:
        for count in sent:
            lease.renew_if_due()
            step(count)
    for write in writes:
        if write.cost > _LARGE:
            lease.renew_if_due()
            assert write.target is not None or write.value is not None
            flags = hash_to_flags(write.target.hash) if write.target else 0
            run.client.put(write.key, _content(run, write, prepared.limit), flags=flags)
            step(1 if write.path else 0)


def _check_landed(run: Run, prepared: Prepared) -> Head | None:
    """After an error: whether the head landed all the same (its answer was lost)."""
    try:
        head = remote.read_head(run.client, prepared.tree.prefix)
    except FileconsulError:
        return None
    if head is not None and head.commit == prepared.head.commit:
        return head
    return None


def _undo(run: Run, prepared: Prepared) -> None:
    journal.repair(run, prepared.tree.prefix, prepared.commit, _check_head(prepared))


# -- operations -------------------------------------------------------------------------------


def _ops(run: Run, prepared: Prepared, writes: Sequence[Write]) -> list[Op]:
    return [_op(run, w, prepared.limit) for w in writes]


def _op(run: Run, write: Write, limit: int) -> Op:
    if write.target is None and write.value is None:
        return kv_delete(write.key)
    data = _content(run, write, limit)
    flags = hash_to_flags(write.target.hash) if write.target is not None else 0
    return kv_set(write.key, data, flags)


def _content(run: Run, write: Write, limit: int) -> bytes:
    """The bytes to write, re-checked against the hash the plan was made with."""
    if write.value is not None:
        return write.value
    assert write.target is not None
    data = scan.read_file(run.settings.basepath, write.path, limit)
    if content_hash(data) != write.target.hash:
        raise ConflictError(
            f"{write.path} changed while it was being pushed; run push again when it is quiet"
        )
    return data


def _txn(run: Run, ops: list[Op] | bytes) -> int:
    """Run a write transaction; the ModifyIndex it committed at. TxnFailed when Consul
    rolled it back (a check or a check-and-set failed)."""
    results = run.client.txn(ops)
    return max((int(r.get("ModifyIndex") or 0) for r in results), default=0)
