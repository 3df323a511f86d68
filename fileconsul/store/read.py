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

from fileconsul.model import records
from fileconsul.model.facts import FileInfo
from fileconsul.model.manifest import decode, digest
from fileconsul.model.records import Commit, Head
from fileconsul.model.tree import (
    KnownTree,
    KVEntry,
    RemoteTree,
    committed_tree,
    from_entries,
    legacy_manifest,
    parse_head,
)
from fileconsul.store.client import ConsulClient, TxnFailed, kv_get, kv_get_tree
from fileconsul.store.layout import (
    head_key,
    legacy_lock_key,
    legacy_manifest_key,
    lock_key,
    log_key,
    manifest_key,
)
from fileconsul.store.lock import wait_for_lock

#: Records read per transaction while a node catches up.
_RECORDS_PER_TXN = 16


class _Moved(Exception):
    """The head moved while the tree was read: read it again."""


class _CorruptManifest(Exception):
    """The head's manifest cannot be read: the values are read instead."""


def read(
    client: ConsulClient,
    prefix: str,
    *,
    known: KnownTree | None = None,
    lock_wait: float = 30.0,
    stale: bool = False,
    session: str | None = None,
    others: bool = True,
    head: Head | None = None,
) -> RemoteTree:
    """The remote tree. `known` is the committed tree this node knows;
    `session` is the caller's own push lock, which it need not wait for. Without `others`,
    writes other than commits are not looked for (a watcher woken by a commit spares the
    servers the prefix's listing, which costs them in proportion to the tree). `head` is the
    head as just read (a watcher's blocking query returns it), so it is not read again."""
    deadline = time.monotonic() + lock_wait
    while True:
        try:
            return _read_once(client, prefix, known, stale, session, deadline, others, head)
        except _Moved:
            head = None


def _read_once(
    client: ConsulClient,
    prefix: str,
    known: KnownTree | None,
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
            return committed_tree(
                head, prefix, committed_files(client, prefix, head, known, stale=stale)
            )
        if head is None:
            legacy = _read_legacy_fast(client, prefix, listing, stale)
            if legacy is not None:
                return legacy
        entries = _entries(client, prefix, head, session, deadline)
        committed = {}
        if head is not None:
            committed = committed_files(client, prefix, head, known)
    except _CorruptManifest as exc:
        entries, committed, warning = (
            _entries(client, prefix, head, session, deadline),
            {},
            str(exc),
        )
    return _tree_of(prefix, entries, head, committed, warning)


def _tree_of(
    prefix: str,
    entries: list[KVEntry],
    head: Head | None,
    committed: dict[str, FileInfo],
    warning: str | None,
) -> RemoteTree:
    """The tree from every entry read under the prefix, a first-format manifest among them,
    and the record of the revision after the head."""
    by_key = {e.key: e for e in entries}
    legacy = by_key.pop(legacy_manifest_key(prefix), None)
    record = by_key.pop(log_key(prefix, head.revision + 1), None) if head else None
    return from_entries(
        prefix,
        list(by_key.values()),
        head,
        committed,
        legacy=legacy,
        record=record,
        warnings=(warning,) if warning else (),
        unknown=warning is not None,
    )


def read_head(client: ConsulClient, prefix: str, *, stale: bool = False) -> Head | None:
    entry, _ = client.get(head_key(prefix), stale=stale)
    return None if entry is None else parse_head(entry)


def _read_legacy_fast(
    client: ConsulClient, prefix: str, listing: int, stale: bool
) -> RemoteTree | None:
    """A tree of the first format whose manifest is the last write under the prefix."""
    entry, _ = client.get(legacy_manifest_key(prefix), stale=stale)
    if entry is None or entry.modify_index != listing:
        return None
    files, _ = legacy_manifest(entry)
    if files is None:
        return None
    return RemoteTree(
        prefix,
        committed=files,
        files=dict(files),
        commit_index=entry.modify_index,
        legacy_index=entry.modify_index,
        fast=True,
    )


# -- the committed tree -----------------------------------------------------------------------


def committed_files(
    client: ConsulClient,
    prefix: str,
    head: Head,
    known: KnownTree | None,
    *,
    stale: bool = False,
) -> dict[str, FileInfo]:
    """The head's tree: the one this node knows, followed through the records since when
    they are still kept, else the manifest."""
    if known is not None and known.revision == head.revision and known.digest == head.commit.digest:
        return dict(known.files)
    if known is not None and head.oldest - 1 <= known.revision < head.revision:
        try:
            changes = list(changes_since(client, prefix, head, known.revision, stale=stale))
        except (TxnFailed, ValueError):
            changes = None
        if (
            changes is not None
            and records.digest_after(known.digest, changes) == head.commit.digest
        ):
            files = dict(known.files)
            records.forward(files, changes)
            return files
    return read_manifest(client, prefix, head, stale=stale)


def changes_since(
    client: ConsulClient, prefix: str, head: Head, revision: int, *, stale: bool = False
) -> Iterator[records.Change]:
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
