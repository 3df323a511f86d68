"""The write side of Consul, mirroring `read`: committing a prepared revision.

A commit writes the changed keys under `<prefix>/`, keeps the contents they replace (under
the revision that replaced them), writes the revision's record and manifest, and moves the
head with check-and-set: the head is what makes it committed.

A small commit is one transaction that also checks that no push holds the lock and that no
push left an uncommitted record: all of it or none. A larger one takes the lock, writes the
kept contents, the manifest and the record first (the record is also the journal of the push
under way), then the files in batches that each check the head has not moved, then the head.
A push that fails before its head lands is undone from its journal, by itself or, when it
died, by the next push; readers ignore its values meanwhile. What the history no longer keeps
is deleted by the push that makes it fall out.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import replace

from fileconsul.errors import ConflictError, FileconsulError, ReplicaRefused
from fileconsul.model import replica
from fileconsul.model.facts import content_hash, hash_to_flags
from fileconsul.model.records import Head
from fileconsul.model.tree import RemoteTree
from fileconsul.store import read, repair
from fileconsul.store.batching import batches
from fileconsul.store.client import ConsulClient, TxnFailed
from fileconsul.store.layout import (
    blobs_prefix,
    genesis_key,
    head_key,
    legacy_lock_key,
    legacy_manifest_key,
    lock_key,
    log_key,
    log_prefix,
    manifests_prefix,
    revision_of,
    tick_key,
)
from fileconsul.store.lock import Lease, push_lock
from fileconsul.store.ops import (
    TXN_MAX_BODY,
    TXN_MAX_OPS,
    Op,
    kv_cas,
    kv_check_index,
    kv_check_not_exists,
    kv_delete,
    kv_delete_cas,
    kv_delete_tree,
    kv_set,
)
from fileconsul.store.prepare import ENVELOPE, Prepared
from fileconsul.store.send import LARGE, op_of, send

#: Advances a progress display by a count of items done.
Step = Callable[[int], None]
#: Makes a progress display for (label, total items); yields its step function.
Progress = Callable[[str, int], AbstractContextManager[Step]]

_LOST = (
    "another push committed first; nothing of this push was committed (run status, then push again)"
)


def no_progress(label: str, total: int) -> AbstractContextManager[Step]:
    return nullcontext(lambda count: None)


def commit(
    client: ConsulClient,
    prepared: Prepared,
    replan: Callable[[RemoteTree], Prepared] | None,
    *,
    lock_wait: float,
    label: str = "pushing",
    progress: Progress = no_progress,
    notify: Callable[[str], None] = lambda text: None,
    sending: Callable[[], AbstractContextManager[object]] = nullcontext,
    into_replica: bool = False,
    reread: Callable[[str], RemoteTree] | None = None,
) -> tuple[Prepared, Head]:
    """Commit `prepared`: as one transaction when it is small, else under the lock. Under the
    lock, a push that died without committing is undone first, and when the tree moved since
    `prepared` was planned, `replan` plans again on it (without one: ConflictError). What was
    committed, and its head. `sending` wraps what writes the commit (the wait for the lock
    is outside it: nothing is sent yet); `notify` hears what the caller should say; `reread`
    reads the tree under the lock (given the lock's session) as the caller planned on it. A
    replica of another datacenter refuses it (ReplicaRefused), unless it is its replicator's
    (`into_replica`)."""
    _refuse_replica(prepared.tree, into_replica)
    if fits_one_txn(prepared):
        with sending():
            head = write_unlocked(client, prepared)
        if head is not None:
            return prepared, head
    prefix = prepared.tree.prefix
    with push_lock(client, prefix, lock_wait) as lease:
        fresh = _read_locked(client, prepared.tree, lease.session, lock_wait, reread)
        _refuse_replica(fresh, into_replica)
        if not _plans_like(fresh, prepared.tree):
            if replan is None:
                raise ConflictError(
                    f"the tree moved to revision {fresh.revision} since revision "
                    f"{prepared.tree.revision} was read; nothing was committed (look again, "
                    "then run the command again)"
                )
            prepared = replan(fresh)
        with sending(), progress(label, len(prepared.files)) as step:
            return prepared, write_locked(client, lease, prepared, step, notify)


def _refuse_replica(tree: RemoteTree, into_replica: bool) -> None:
    refused = None if into_replica else replica.refusal(tree.head, tree.prefix)
    if refused is not None:
        raise ReplicaRefused(refused)


def recover(client: ConsulClient, tree: RemoteTree, lock_wait: float) -> RemoteTree:
    """Under the lock, undo a push that died without committing (its record names it); the
    tree as it then stands."""
    with push_lock(client, tree.prefix, lock_wait) as lease:
        return _read_locked(client, tree, lease.session, lock_wait)


def _read_locked(
    client: ConsulClient,
    tree: RemoteTree,
    session: str,
    lock_wait: float,
    reread: Callable[[str], RemoteTree] | None = None,
) -> RemoteTree:
    """The tree as it stands under the lock, once any push that died without committing has
    been undone from its record."""
    prefix = tree.prefix
    while True:
        if reread is not None:
            fresh = reread(session)
        else:
            fresh = read.read(
                client, prefix, known=tree.known, lock_wait=lock_wait, session=session
            )
        entry, _ = client.get(log_key(prefix, fresh.next_revision))
        if entry is None:
            return fresh
        record = read.decode_record(entry.key, entry.value, fresh.next_revision)
        repair.repair(client, prefix, record, head_check(fresh))


def _plans_like(fresh: RemoteTree, tree: RemoteTree) -> bool:
    """Whether a commit planned on `tree` plans the same on `fresh`."""
    return (
        fresh.commit_index == tree.commit_index
        and fresh.files == tree.files
        and fresh.adopt == tree.adopt
        and fresh.uncommitted == tree.uncommitted
        and fresh.foreign == tree.foreign
    )


def fits_one_txn(prepared: Prepared) -> bool:
    """Whether everything fits one transaction beside its checks and the head."""
    writes = [*prepared.files, *prepared.kept, *prepared.metadata]
    ops = len(_unlocked_guards(prepared)) + len(writes) + len(_head_ops(prepared))
    body = sum(w.cost for w in writes)  # the record and manifest costed by their size
    return ops <= TXN_MAX_OPS and body + 4 * ENVELOPE < TXN_MAX_BODY


# -- the small commit: one transaction --------------------------------------------------------


def _guards(prepared: Prepared) -> list[Op]:
    """What a commit checks: that no push left an uncommitted record (and, for a tree of the
    first format, that its manifest is the one planned on)."""
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
    if tree.head is None or not tree.head.history:
        # A history's first commit (or the first to name an older one) says it exists.
        ops.append(kv_set(genesis_key(tree.prefix), prepared.head.genesis(), 0))
    if tree.legacy_index:
        ops.append(kv_delete_cas(legacy_manifest_key(tree.prefix), tree.legacy_index))
    changes = prepared.commit.changes
    if changes and all(c.kind == "mode" for c in changes):
        ops += [kv_set(tick_key(tree.prefix), b"", 0), kv_delete(tick_key(tree.prefix))]
    return ops


def write_unlocked(client: ConsulClient, prepared: Prepared) -> Head | None:
    """The common small push: one transaction that also checks no push holds a lock, so it
    needs no session. The new head; None when it lost (a lock was held, a record was left,
    or the head moved), for the caller to take the locked path."""
    writes = [*prepared.files, *prepared.kept, *prepared.metadata]
    ops = [*_unlocked_guards(prepared), *(op_of(w, prepared.content) for w in writes)]
    try:
        index = _txn(client, [*ops, *_head_ops(prepared)])
    except TxnFailed:
        return None
    collect(client, prepared.tree.prefix, prepared.head)
    return _landed(prepared, index)


def _landed(prepared: Prepared, index: int) -> Head:
    return replace(prepared.head, index=index)


# -- the large commit: under the lock ---------------------------------------------------------


def write_locked(
    client: ConsulClient,
    lease: Lease,
    prepared: Prepared,
    step: Step,
    notify: Callable[[str], None] = lambda text: None,
) -> Head:
    """Write under the lock and move the head; the new head. ConflictError when the head
    moved after all (another tool wrote it). A failure before the head lands undoes what was
    written, as far as Consul can be reached."""
    landed = None
    try:
        _send_metadata(client, lease, prepared)
        checks = [head_check(prepared.tree)]
        send(client, prepared.files, checks, prepared.content, step=step, renew=lease.renew_if_due)
        lease.renew_if_due()
        landed = _landed(prepared, _txn(client, _head_ops(prepared)))
    except TxnFailed as exc:
        _undo(client, lease, prepared)
        raise ConflictError(_LOST) from exc
    except BaseException:
        landed = _check_landed(client, prepared)
        if landed is None:
            try:
                _undo(client, lease, prepared)
            except FileconsulError as failed:
                notify(
                    f"the push could not undo what it sent ({failed}); the next push undoes "
                    "it, and until then raw readers see its values"
                )
            raise
    collect(client, prepared.tree.prefix, landed)
    return landed


def _send_metadata(client: ConsulClient, lease: Lease, prepared: Prepared) -> None:
    """The contents kept, then the manifest and the record: the journal of this push, from
    which it is undone if it never commits."""
    head = head_check(prepared.tree)
    send(client, prepared.kept, [head], renew=lease.renew_if_due)
    record, manifest = prepared.metadata
    if record.cost + manifest.cost + 4 * ENVELOPE < TXN_MAX_BODY:
        _txn(client, [head, *_guards(prepared), op_of(record), op_of(manifest)])
        return
    for write in (manifest, record):
        if write.cost > LARGE:
            # Created only if absent: the journal is the guard a transaction would check.
            assert write.value is not None
            if not client.put(write.key, write.value, cas=0):
                raise TxnFailed(f"{write.key} exists already", [])
        else:
            _txn(client, [head, *_guards(prepared), op_of(write)])


def head_check(tree: RemoteTree) -> Op:
    """A check that the head is still the one `tree` was read at."""
    if tree.head is None:
        return kv_check_not_exists(head_key(tree.prefix))
    return kv_check_index(head_key(tree.prefix), tree.head.index)


def _check_landed(client: ConsulClient, prepared: Prepared) -> Head | None:
    """After an error: whether the head landed all the same (its answer was lost)."""
    try:
        head = read.read_head(client, prepared.tree.prefix)
    except FileconsulError:
        return None
    if head is not None and head.commit == prepared.head.commit:
        return head
    return None


def _undo(client: ConsulClient, lease: Lease, prepared: Prepared) -> None:
    check = head_check(prepared.tree)
    repair.repair(client, prepared.tree.prefix, prepared.commit, check, lease.renew_if_due)


# -- what falls out of the history -----------------------------------------------------------


def collect(client: ConsulClient, prefix: str, head: Head) -> None:
    """Delete what the history no longer keeps: records before the oldest revision, the
    contents kept for revisions up to it (they restore revisions before it), and every
    manifest but the head's. Best effort: what is left is collected by a later push."""
    doomed: list[Op] = []
    with suppress(FileconsulError):
        if head.oldest > 1:
            logs, _ = client.keys(log_prefix(prefix))
            doomed += [kv_delete(k) for k in logs if (revision_of(k) or head.oldest) < head.oldest]
            folders, _ = client.keys(blobs_prefix(prefix), separator="/")
            doomed += [
                kv_delete_tree(k)
                for k in folders
                if (revision_of(k) or head.oldest + 1) <= head.oldest
            ]
        manifests, _ = client.keys(manifests_prefix(prefix))
        doomed += [
            kv_delete(k) for k in manifests if (revision_of(k) or head.revision) < head.revision
        ]
        for batch in batches(doomed, lambda _: 1, count=TXN_MAX_OPS, total=TXN_MAX_OPS):
            client.txn(batch)


# -- operations -------------------------------------------------------------------------------


def _txn(client: ConsulClient, ops: list[Op] | bytes) -> int:
    """Run a write transaction; the ModifyIndex it committed at. TxnFailed when Consul
    rolled it back (a check or a check-and-set failed)."""
    results = client.txn(ops)
    return max((int(r.get("ModifyIndex") or 0) for r in results), default=0)
