"""The write side of Consul, mirroring `remote`'s read side: the push lock, packing a push's
writes into transactions, and committing the manifest with check-and-set.

A push of up to SINGLE_TXN_FILES files is one transaction: the files, the manifest
(check-and-set) and a check that no push holds the lock. A larger one takes the lock and sends
batches that each check the manifest has not moved, several in flight, then the manifest.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from fileconsul import scan
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
    kv_set,
)
from fileconsul.errors import ConflictError
from fileconsul.fileinfo import FileInfo, Files, content_hash, hash_to_flags
from fileconsul.keys import file_key, lock_key, manifest_key
from fileconsul.manifest import encode
from fileconsul.plan import Action
from fileconsul.remote import RemoteTree, wait_for_lock
from fileconsul.run import Run, Step

#: Seconds of a push session's TTL: Consul ends the session of a pusher that died (and so
#: frees the lock) within twice this, its grace period included.
LOCK_TTL = 15
#: Files a push sends in one transaction with no lock: the other two operations check the
#: lock and write the manifest.
SINGLE_TXN_FILES = TXN_MAX_OPS - 2
#: Transactions a push keeps in flight at once.
IN_FLIGHT = 4
#: A value whose operation takes more than this goes alone (a PUT), not in a transaction.
_LARGE = TXN_MAX_BODY // 2
#: Room kept in each transaction body for the manifest's check and the envelope.
_ENVELOPE = 1024
_LOST = (
    "another push committed first; nothing of this push was committed (run status, then push again)"
)


def b64_len(size: int) -> int:
    """The length of `size` bytes in base64, as values travel in a transaction."""
    return 4 * ((size + 2) // 3)


def _json_len(text: str) -> int:
    """At most how long `text` is as a JSON string (a non-ASCII character can take 12 bytes)."""
    return len(text) + 3 if text.isascii() else 12 * len(text) + 3


@dataclass
class Lease:
    """The push lock, held by a session that must be renewed within its TTL."""

    run: Run
    session: str
    renewed: float = field(default_factory=time.monotonic)

    def renew_if_due(self) -> None:
        if time.monotonic() - self.renewed > LOCK_TTL / 3:
            self.run.client.session_renew(self.session)
            self.renewed = time.monotonic()


@contextmanager
def push_lock(run: Run) -> Iterator[Lease]:
    """Hold `<prefix>.lock` with a session, so pushes never interleave and pulls wait."""
    holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    with run.client.session(f"fileconsul push {run.prefix}", ttl=LOCK_TTL) as session:
        deadline = time.monotonic() + run.lock_wait
        while not run.client.put(lock_key(run.prefix), holder.encode(), acquire=session):
            wait_for_lock(run.client, run.prefix, deadline)
        yield Lease(run, session)


class Write(NamedTuple):
    """One key a push writes (or deletes: no target)."""

    path: str
    target: FileInfo | None
    #: The bytes, when known already (read by the scan, or an adopted value); else read again.
    value: bytes | None
    #: About how many bytes of JSON its operation takes in a transaction.
    cost: int


def _write(prefix: str, path: str, target: FileInfo | None, value: bytes | None) -> Write:
    size = target.size if target else 0
    return Write(path, target, value, b64_len(size) + 2 * _json_len(file_key(prefix, path)) + 128)


@dataclass
class Prepared:
    """A push's writes, packed into transactions, and the manifest that commits them."""

    tree: RemoteTree
    writes: list[Write]
    manifest: bytes
    batches: list[list[Write]]
    large: list[Write]
    limit: int
    #: The bytes the scan kept, by path (for packing again on another tree).
    contents: Mapping[str, bytes]

    @property
    def single(self) -> bool:
        """Everything fits one transaction beside the manifest and a lock check."""
        if self.large or len(self.batches) > 1:
            return False
        batch = self.batches[0] if self.batches else []
        body = sum(w.cost for w in batch) + b64_len(len(self.manifest))
        return len(batch) <= SINGLE_TXN_FILES and body + _ENVELOPE < TXN_MAX_BODY


def prepare(
    prefix: str,
    tree: RemoteTree,
    actions: Sequence[Action],
    limit: int,
    contents: Mapping[str, bytes],
) -> Prepared:
    """The writes of `actions` (and of keys another tool wrote, adopted), packed, and the
    manifest of the tree they make."""
    changed = {a.path for a in actions}
    writes = [_write(prefix, a.path, a.target, contents.get(a.path)) for a in actions]
    writes += [
        _write(prefix, path, tree.files[path], tree.values[path])
        for path in sorted(tree.adopt - changed)
        if path in tree.values
    ]
    files = files_after(tree.files, actions)
    small = [w for w in writes if w.cost <= _LARGE]
    # One operation of each transaction is kept for the manifest or its check.
    packed = batches(small, _cost, count=TXN_MAX_OPS - 1, total=TXN_MAX_BODY - _ENVELOPE)
    large = [w for w in writes if w.cost > _LARGE]
    manifest = encode(files, max_size=limit)
    return Prepared(tree, writes, manifest, packed, large, limit, contents)


def _cost(write: Write) -> int:
    return write.cost


def needs_write(tree: RemoteTree, actions: Sequence[Action]) -> bool:
    """Changes to send, or a tree written by another tool to adopt."""
    return bool(actions or tree.adopt or (tree.committed_index == 0 and tree.files))


def write_unlocked(run: Run, prepared: Prepared) -> int | None:
    """The common small push: one transaction that also checks no push holds the lock, so it
    needs no session. The ModifyIndex it committed at; None when it lost (the lock was held
    or the manifest moved), for the caller to take the locked path."""
    try:
        return _single(run, prepared, [kv_check_not_exists(lock_key(run.prefix))])
    except TxnFailed:
        return None


def write_locked(run: Run, lease: Lease, prepared: Prepared, step: Step) -> int:
    """Write under the lock and commit the manifest; the new manifest's ModifyIndex.
    ConflictError when the manifest moved after all (another tool wrote it)."""
    try:
        if prepared.single:
            index = _single(run, prepared, [])
            step(len(prepared.writes))
            return index
        index = prepared.tree.manifest_index
        if prepared.tree.committed_index == 0:
            # The tree as it stands is committed first, so that every batch written below
            # counts as uncommitted to readers until the final manifest lands.
            empty = encode(prepared.tree.files, max_size=prepared.limit)
            index = _commit_manifest(run, empty, index)
        return _send_and_commit(run, lease, prepared, index, step)
    except TxnFailed as exc:
        raise ConflictError(_LOST) from exc


def _single(run: Run, prepared: Prepared, guard: list[Op]) -> int:
    """Files and manifest in one transaction, all or nothing."""
    batch = prepared.batches[0] if prepared.batches else []
    ops = [_op(run, w, prepared.limit) for w in batch]
    manifest = _manifest_op(run, prepared.manifest, prepared.tree.manifest_index)
    return _txn(run, [*guard, *ops, manifest])


def _send_and_commit(run: Run, lease: Lease, prepared: Prepared, index: int, step: Step) -> int:
    """Send the prepared batches and large values, each checking the manifest is still at
    `index`, then commit the manifest in its place."""
    limit = prepared.limit
    check = kv_check_index(manifest_key(run.prefix), index)

    def send(batch: list[Write]) -> int:
        _txn(run, encode_txn([check, *(_op(run, w, limit) for w in batch)]))
        return len(batch)

    # Batches touch disjoint keys and each checks the manifest, so their order is free; several
    # in flight let Consul apply one while the next is encoded and sent.
    with closing(
        in_flight(send, prepared.batches, depth=IN_FLIGHT, name="fileconsul-push")
    ) as sent:
        for count in sent:
            lease.renew_if_due()
            step(count)
    for write in prepared.large:
        lease.renew_if_due()
        assert write.target is not None
        data = _content(run, write, limit)
        run.client.put(
            file_key(run.prefix, write.path), data, flags=hash_to_flags(write.target.hash)
        )
        step(1)
    lease.renew_if_due()
    return _commit_manifest(run, prepared.manifest, index)


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


def _op(run: Run, write: Write, limit: int) -> Op:
    key = file_key(run.prefix, write.path)
    if write.target is None:
        return kv_delete(key)
    return kv_set(key, _content(run, write, limit), hash_to_flags(write.target.hash))


def _manifest_op(run: Run, manifest: bytes, index: int) -> Op:
    flags = hash_to_flags(content_hash(manifest))
    return kv_cas(manifest_key(run.prefix), manifest, flags, index)


def _txn(run: Run, ops: list[Op] | bytes) -> int:
    """Run a write transaction; the ModifyIndex it committed at. TxnFailed when Consul
    rolled it back (a check or a check-and-set failed)."""
    results = run.client.txn(ops)
    return max((int(r.get("ModifyIndex") or 0) for r in results), default=0)


def _commit_manifest(run: Run, manifest: bytes, index: int) -> int:
    if b64_len(len(manifest)) < _LARGE:
        return _txn(run, [_manifest_op(run, manifest, index)])
    flags = hash_to_flags(content_hash(manifest))
    if not run.client.put(manifest_key(run.prefix), manifest, flags=flags, cas=index):
        raise ConflictError(_LOST)
    entry, _ = run.client.get(manifest_key(run.prefix))
    return entry.modify_index if entry else 0


def files_after(tree_files: Files, actions: Sequence[Action]) -> dict[str, FileInfo]:
    """The tree once `actions` are applied to it."""
    files = dict(tree_files)
    for action in actions:
        if action.target is None:
            files.pop(action.path, None)
        else:
            files[action.path] = action.target
    return files
