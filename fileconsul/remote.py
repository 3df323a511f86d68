"""The remote tree: what Consul holds for a prefix, read as cheaply as it can be.

The head names the last revision and the index it landed at. When nothing under `<prefix>/`
was written since (the one-level listing's index says so), the committed tree is the tree:
a node that knows an earlier revision's tree follows the commit records since (checked
against the head's digest), any other reads the manifest. Otherwise every value is read,
together with the push lock and the record of a push that has not committed: values of a push
under way are waited for, values of a push that died are ignored (its node and time named),
and values written by another tool are taken, to be adopted by the next push.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from fileconsul import history
from fileconsul.consul import ConsulClient, KVEntry, TxnFailed, kv_get, kv_get_tree
from fileconsul.errors import ConflictError
from fileconsul.fileinfo import DEFAULT_MODE, FileInfo, content_hash, hash_to_flags
from fileconsul.history import Commit, Head
from fileconsul.keys import (
    blob_key,
    file_key,
    head_key,
    is_internal,
    legacy_lock_key,
    legacy_manifest_key,
    lock_key,
    log_key,
    manifest_key,
    unsafe_reason,
)
from fileconsul.manifest import decode, decode_legacy, digest
from fileconsul.state import Remote

#: Records read per transaction while a node catches up.
_RECORDS_PER_TXN = 16


@dataclass
class RemoteTree:
    prefix: str
    head: Head | None = None
    #: The committed tree: the head's manifest, or a first-format manifest; empty when none.
    committed: dict[str, FileInfo] = field(default_factory=dict)
    #: The tree as it stands: the committed one, and what other tools wrote since.
    files: dict[str, FileInfo] = field(default_factory=dict)
    #: The index the committed tree landed at; 0 when nothing was committed.
    commit_index: int = 0
    #: The ModifyIndex of a first-format manifest (`<prefix>/.fileconsul/manifest`), else 0.
    legacy_index: int = 0
    #: Values already read, each matching `files`.
    values: dict[str, bytes] = field(default_factory=dict)
    #: Paths whose keys another tool wrote (no hash in their Flags): the next push rewrites them.
    adopt: set[str] = field(default_factory=set)
    #: Where a path's committed content is, when its own key holds something else.
    sources: dict[str, str] = field(default_factory=dict)
    #: (key, reason) of keys that can never be files; reported and skipped.
    unsafe: list[tuple[str, str]] = field(default_factory=list)
    #: (path, reason) of values that contradict the commit; never written to disk.
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    #: Paths whose keys hold values of a push that has not committed; the committed state holds.
    uncommitted: list[str] = field(default_factory=list)
    #: The record of the push those values belong to (its node and time), when it left one.
    dead_push: Commit | None = None
    warnings: list[str] = field(default_factory=list)
    #: Every file of the committed tree is gone: another tool deleted the prefix.
    wiped: bool = False
    #: Nothing was written under the prefix since the commit: no value was read.
    fast: bool = False
    #: The committed tree could not be read (its manifest is corrupt): `committed` is empty.
    unknown: bool = False

    @property
    def revision(self) -> int:
        return self.head.revision if self.head else 0

    @property
    def remote_state(self) -> Remote | None:
        """The committed tree, as a node's record keeps it (None before the first revision, or
        when it could not be read)."""
        if self.head is None or self.unknown:
            return None
        return Remote(self.commit_index, self.head.commit.digest, dict(self.committed))


class _Moved(Exception):
    """The head moved while the tree was read: read it again."""


class _CorruptManifest(Exception):
    """The head's manifest cannot be read: the values are read instead."""


def read(
    client: ConsulClient,
    prefix: str,
    *,
    known: Remote | None = None,
    known_revision: int = 0,
    lock_wait: float = 30.0,
    stale: bool = False,
    session: str | None = None,
    others: bool = True,
    head: Head | None = None,
) -> RemoteTree:
    """The remote tree. `known` is the committed tree this node knows, at `known_revision`;
    `session` is the caller's own push lock, which it need not wait for. Without `others`,
    writes other than commits are not looked for (a watcher woken by a commit spares the
    servers the prefix's listing, which costs them in proportion to the tree). `head` is the
    head as just read (a watcher's blocking query returns it), so it is not read again."""
    deadline = time.monotonic() + lock_wait
    while True:
        try:
            return _read_once(
                client, prefix, known, known_revision, stale, session, deadline, others, head
            )
        except _Moved:
            head = None


def _read_once(
    client: ConsulClient,
    prefix: str,
    known: Remote | None,
    known_revision: int,
    stale: bool,
    session: str | None,
    deadline: float,
    others: bool,
    given: Head | None,
) -> RemoteTree:
    head = given or read_head(client, prefix, stale=stale)
    listing = 0
    if others or head is None:
        _, listing = client.keys(prefix + "/", separator="/", stale=stale)
    warning = None
    try:
        if head is not None and listing <= head.index:
            committed = committed_files(client, prefix, head, known, known_revision, stale=stale)
            return RemoteTree(prefix, head, committed, dict(committed), head.index, fast=True)
        if head is None:
            legacy = _read_legacy_fast(client, prefix, listing, stale)
            if legacy is not None:
                return legacy
        entries = _entries(client, prefix, head, session, deadline)
        committed = {}
        if head is not None:
            committed = committed_files(client, prefix, head, known, known_revision)
    except _CorruptManifest as exc:
        entries, committed, warning = (
            _entries(client, prefix, head, session, deadline),
            {},
            str(exc),
        )
    tree = from_entries(prefix, entries, head, committed)
    if warning is not None:
        tree.warnings.append(warning)
        tree.unknown = True
    return tree


def read_head(client: ConsulClient, prefix: str, *, stale: bool = False) -> Head | None:
    entry, _ = client.get(head_key(prefix), stale=stale)
    return None if entry is None else parse_head(entry)


def parse_head(entry: KVEntry) -> Head:
    """The head in an entry; NewerFormat when a newer fileconsul wrote it."""
    try:
        if entry.flags != hash_to_flags(content_hash(entry.value)):
            raise ValueError("its value does not match the hash in its Flags")
        return Head.decode(entry.value, entry.modify_index)
    except ValueError as exc:
        raise ConflictError(
            f"the head {entry.key} is corrupt ({exc}); no change can be planned on it: "
            "restore it, or remove it to start a new history from the keys"
        ) from exc


def _read_legacy_fast(
    client: ConsulClient, prefix: str, listing: int, stale: bool
) -> RemoteTree | None:
    """A tree of the first format whose manifest is the last write under the prefix."""
    entry, _ = client.get(legacy_manifest_key(prefix), stale=stale)
    if entry is None or entry.modify_index != listing:
        return None
    tree = RemoteTree(prefix)
    files = _legacy_manifest(entry, tree)
    if files is None:
        return None
    tree.committed, tree.files, tree.fast = files, dict(files), True
    return tree


def _legacy_manifest(entry: KVEntry, tree: RemoteTree) -> dict[str, FileInfo] | None:
    try:
        if entry.flags != hash_to_flags(content_hash(entry.value)):
            raise ValueError("its value does not match the hash in its Flags")
        files = decode_legacy(entry.value)
    except ValueError as exc:
        tree.warnings.append(
            f"the manifest {entry.key} is corrupt ({exc}); reading every value instead "
            "(the next push replaces it)"
        )
        return None
    tree.legacy_index = tree.commit_index = entry.modify_index
    return files


# -- the committed tree -----------------------------------------------------------------------


def committed_files(
    client: ConsulClient,
    prefix: str,
    head: Head,
    known: Remote | None,
    known_revision: int,
    *,
    stale: bool = False,
) -> dict[str, FileInfo]:
    """The head's tree: the one this node knows, followed through the records since when
    they are still kept, else the manifest."""
    if known is not None and known_revision == head.revision and known.digest == head.commit.digest:
        return dict(known.files)
    if known is not None and head.oldest - 1 <= known_revision < head.revision:
        try:
            changes = list(changes_since(client, prefix, head, known_revision, stale=stale))
        except (TxnFailed, ValueError):
            changes = None
        if (
            changes is not None
            and history.digest_after(known.digest, changes) == head.commit.digest
        ):
            files = dict(known.files)
            history.forward(files, changes)
            return files
    return read_manifest(client, prefix, head, stale=stale)


def changes_since(
    client: ConsulClient, prefix: str, head: Head, revision: int, *, stale: bool = False
) -> Iterator[history.Change]:
    """The changes of every revision after `revision` up to the head, in order. TxnFailed
    when a record is no longer kept."""
    if head.revision == revision + 1 and head.inline:
        yield from head.commit.changes
        return
    for commit in read_commits(client, prefix, range(revision + 1, head.revision + 1), stale):
        yield from commit.changes


def read_commits(
    client: ConsulClient, prefix: str, revisions: Sequence[int], stale: bool = False
) -> Iterator[Commit]:
    """The records of `revisions`, in order. TxnFailed when one is not kept."""
    for start in range(0, len(revisions), _RECORDS_PER_TXN):
        chunk = revisions[start : start + _RECORDS_PER_TXN]
        entries = client.txn_entries([kv_get(log_key(prefix, r)) for r in chunk], stale=stale)
        by_key = {e.key: e for e in entries}
        for revision in chunk:
            yield Commit.decode(by_key[log_key(prefix, revision)].value, revision)


def read_manifest(
    client: ConsulClient, prefix: str, head: Head, *, stale: bool = False
) -> dict[str, FileInfo]:
    entry, _ = client.get(manifest_key(prefix, head.revision), stale=stale)
    if entry is None:
        raise _Moved  # a later commit removed it: the head is newer than the one we read
    try:
        files = decode(entry.value, head.revision)
        if digest(files) != head.commit.digest:
            raise ValueError("it does not match the head's digest")
    except ValueError as exc:
        raise _CorruptManifest(
            f"the manifest {entry.key} is corrupt ({exc}); reading every value instead, with "
            "default modes (the next push writes it again)"
        ) from exc
    return files


# -- every value ------------------------------------------------------------------------------


def _entries(
    client: ConsulClient, prefix: str, head: Head | None, session: str | None, deadline: float
) -> list[KVEntry]:
    """Every entry under the prefix, the push locks and the record of the next revision, read
    together, once no other push holds a lock."""
    next_record = log_key(prefix, head.revision + 1 if head else 1)
    locks = (lock_key(prefix), legacy_lock_key(prefix))
    while True:
        ops = [kv_get_tree(prefix + "/"), *map(kv_get_tree, locks), kv_get_tree(next_record)]
        entries = client.txn_entries(ops)
        held = [e for e in entries if e.key in locks and e.session and e.session != session]
        if not held:
            return [e for e in entries if e.key not in locks]
        wait_for_lock(client, held[0].key, deadline)


def wait_for_lock(client: ConsulClient, key: str, deadline: float) -> None:
    """Block until the lock `key` is free, or raise ConflictError at the deadline."""
    index = None
    while (left := deadline - time.monotonic()) > 0:
        entry, index = client.get(key, index=index, wait=min(left, 10.0))
        if entry is None or not entry.session:
            return
    raise ConflictError(
        f"a push has held {key} past the wait; retry when it finishes (or raise --lock-wait)"
    )


def from_entries(
    prefix: str, entries: list[KVEntry], head: Head | None, committed: dict[str, FileInfo]
) -> RemoteTree:
    """The tree from every entry under the prefix (with, when there is one, the record of a
    push that has not committed), the head and its committed tree."""
    tree = RemoteTree(prefix, head, dict(committed))
    by_key = {e.key: e for e in entries}
    legacy = by_key.pop(legacy_manifest_key(prefix), None)
    if head is not None:
        tree.commit_index = head.index
        record = by_key.pop(log_key(prefix, head.revision + 1), None)
        tree.dead_push = _journal(record, head.revision + 1, tree)
    elif legacy is not None:
        tree.committed = _legacy_manifest(legacy, tree) or {}
    pending = {c.path: c for c in tree.dead_push.changes} if tree.dead_push else {}
    paths = _split_keys(prefix, list(by_key), tree)
    for rel in sorted(paths):
        _add_entry(tree, rel, by_key[file_key(prefix, rel)], pending.get(rel))
    for rel in tree.committed.keys() - paths:
        change = pending.get(rel)
        if change is not None and change.new is None:
            _keep_committed(tree, rel)  # deleted by the push that did not commit
        # else: deleted by another tool after the commit, and so deleted
    tree.wiped = bool(tree.committed) and not paths
    return tree


def _journal(entry: KVEntry | None, revision: int, tree: RemoteTree) -> Commit | None:
    if entry is None:
        return None
    try:
        return Commit.decode(entry.value, revision)
    except ValueError as exc:
        tree.warnings.append(f"the record {entry.key} is unreadable ({exc})")
        return None


def _split_keys(prefix: str, keys: list[str], tree: RemoteTree) -> set[str]:
    """The safe file paths among `keys`; unsafe keys are recorded on `tree`."""
    paths: set[str] = set()
    start = len(prefix) + 1
    for key in keys:
        if not key.startswith(prefix + "/") and key != prefix:
            continue
        rel = key[start:]
        if is_internal(rel):
            continue
        reason = "a key equal to the prefix" if rel == "" else unsafe_reason(rel)
        if reason is not None:
            tree.unsafe.append((key, reason))
        else:
            paths.add(rel)
    return paths


def _add_entry(tree: RemoteTree, rel: str, entry: KVEntry, pending: history.Change | None) -> None:
    digest_ = content_hash(entry.value)
    listed = tree.committed.get(rel)
    flags_ok = entry.flags == hash_to_flags(digest_)
    if tree.commit_index and entry.modify_index <= tree.commit_index and listed is not None:
        if listed.hash != digest_:
            # Keep the commit's claim: a pull that needs the value fails verification on it.
            tree.corrupt.append((rel, "its value does not match the committed hash"))
            tree.files[rel] = listed
            return
    elif _uncommitted(tree, entry, pending, digest_, flags_ok):
        tree.uncommitted.append(rel)
        if listed is not None:
            _keep_committed(tree, rel)
        return
    mode = listed.mode if listed is not None else DEFAULT_MODE
    tree.files[rel] = FileInfo(digest_, len(entry.value), mode)
    tree.values[rel] = entry.value
    if not flags_ok:
        tree.adopt.add(rel)


def _uncommitted(
    tree: RemoteTree,
    entry: KVEntry,
    pending: history.Change | None,
    digest_: str,
    flags_ok: bool,
) -> bool:
    """Whether a value written after the commit belongs to a push that has not committed."""
    if entry.modify_index <= tree.commit_index:
        return False
    if tree.head is not None:
        return pending is not None and pending.new is not None and pending.new.hash == digest_
    # The first format kept no record of a push under way: a value with its hash in its
    # Flags, written after the manifest, was one.
    return bool(tree.commit_index) and flags_ok


def _keep_committed(tree: RemoteTree, rel: str) -> None:
    """The committed state of `rel` holds; its content is where the push that replaced it
    kept it, when that push left a record."""
    listed = tree.committed[rel]
    tree.files[rel] = listed
    if tree.dead_push is not None:
        tree.sources[rel] = blob_key(tree.prefix, tree.dead_push.revision, listed.hash)
