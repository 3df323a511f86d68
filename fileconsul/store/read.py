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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from typing import NamedTuple

from fileconsul.errors import IntegrityError
from fileconsul.model import records
from fileconsul.model.facts import DEFAULT_MODE, FileInfo, content_hash
from fileconsul.model.manifest import decode, digest
from fileconsul.model.records import Commit, Head
from fileconsul.model.seal import Trust, Verified
from fileconsul.model.tree import (
    KnownTree,
    KVEntry,
    RemoteTree,
    committed_tree,
    from_entries,
    legacy_manifest,
    parse_head,
    split_keys,
    trusted,
)
from fileconsul.store.batching import batches
from fileconsul.store.client import ConsulClient, TxnFailed
from fileconsul.store.layout import (
    genesis_key,
    head_key,
    legacy_lock_key,
    legacy_manifest_key,
    lock_key,
    log_key,
    log_prefix,
    manifest_key,
    manifests_prefix,
    revision_of,
)
from fileconsul.store.lock import wait_for_lock
from fileconsul.store.ops import TXN_MAX_OPS, kv_get, kv_get_tree

#: Records read per transaction while a node catches up.
_RECORDS_PER_TXN = 16
#: Bytes of values read per transaction (contents looked up by hash).
READ_BATCH = 4 * 1024 * 1024


class Moved(Exception):
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
    trust: Trust | None = None,
    held: int = 0,
) -> RemoteTree:
    """The remote tree. `known` is the committed tree this node knows;
    `session` is the caller's own push lock, which it need not wait for. Without `others`,
    writes other than commits are not looked for (a watcher woken by a commit spares the
    servers the prefix's listing, which costs them in proportion to the tree). `head` is the
    head as just read (a watcher's blocking query returns it), so it is not read again.

    With `trust`, the committed tree is the one a trusted key signed (`store.sealed`), and
    anything else under the prefix is foreign (listed, never taken); Untrusted when the head
    is not signed by a trusted key, is older than revision `held`, or its tree is not what
    the signature covers."""
    deadline = time.monotonic() + lock_wait
    reading = _Reading(client, prefix, known, stale, session, deadline, others, trust, held)
    while True:
        try:
            tree = _read_once(reading, head)
        except Moved:
            head = None
            continue
        if trust is None or tree.head is None:
            return tree
        assert tree.verified is not None
        return trusted(tree, tree.verified)


class _Reading(NamedTuple):
    client: ConsulClient
    prefix: str
    known: KnownTree | None
    stale: bool
    session: str | None
    deadline: float
    others: bool
    trust: Trust | None
    held: int

    def committed(self, head: Head, *, stale: bool) -> tuple[dict[str, FileInfo], Verified | None]:
        """The head's tree, and how it was verified (with trust)."""
        if self.trust is None:
            return committed_files(self.client, self.prefix, head, self.known, stale=stale), None
        from fileconsul.store import sealed  # it reads records and manifests through this one

        return sealed.verified_files(
            self.client, self.prefix, head, self.known, self.trust, self.held, stale=stale
        )


def _read_once(reading: _Reading, given: Head | None) -> RemoteTree:
    client, prefix, stale = reading.client, reading.prefix, reading.stale
    head = given or read_head(client, prefix, stale=stale)
    listing = 0
    if reading.others or head is None:
        _, listing = client.keys(prefix + "/", separator="/", stale=stale)
    warning = None
    verified = None
    try:
        if head is not None and listing <= head.index:
            files, verified = reading.committed(head, stale=stale)
            return replace(committed_tree(head, prefix, files), verified=verified)
        if head is None:
            legacy = _read_legacy_fast(client, prefix, listing, stale)
            if legacy is not None:
                return legacy
        entries = _entries(client, prefix, head, reading.session, reading.deadline)
        committed: dict[str, FileInfo] = {}
        if head is not None:
            committed, verified = reading.committed(head, stale=False)
    except _CorruptManifest as exc:
        assert head is not None
        entries = _entries(client, prefix, head, reading.session, reading.deadline)
        rebuilt = _rebuilt(client, prefix, head, entries)
        if rebuilt is not None:
            note = (
                f"{exc}; the tree was rebuilt from the values and the records kept, and "
                "matches the head's digest (the next push writes a new manifest)"
            )
            return _tree_of(prefix, entries, head, rebuilt, None, notes=(note,))
        committed, warning = {}, f"{exc}; the records kept do not rebuild it"
    lost = _lost_history(client, prefix, stale) if head is None else None
    tree = _tree_of(prefix, entries, head, committed, warning, lost)
    return replace(tree, verified=verified)


def _tree_of(
    prefix: str,
    entries: list[KVEntry],
    head: Head | None,
    committed: dict[str, FileInfo],
    warning: str | None,
    lost: _Lost | None = None,
    *,
    notes: tuple[str, ...] = (),
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
        warnings=(warning,) if warning else notes,
        unknown=warning is not None,
        orphaned=lost.revisions if lost else None,
        modes=lost.modes if lost else None,
    )


class _Lost(NamedTuple):
    """A history whose head is gone: its first and last revisions, and the files its last
    manifest listed."""

    revisions: tuple[int, int]
    modes: dict[str, FileInfo]


def _lost_history(client: ConsulClient, prefix: str, stale: bool) -> _Lost | None:
    """The history left without a head, if there is one. A lone record of revision 1 with
    no genesis is a first push that died (the next push undoes it), not a history."""
    logs, _ = client.keys(log_prefix(prefix), stale=stale)
    manifests, _ = client.keys(manifests_prefix(prefix), stale=stale)
    genesis, _ = client.get(genesis_key(prefix), stale=stale)
    found = sorted({r for k in logs + manifests if (r := revision_of(k)) is not None})
    if genesis is None and found in ([], [1]):
        return None
    last = found[-1] if found else 0
    modes: dict[str, FileInfo] = {}
    if manifests:
        newest = max(r for k in manifests if (r := revision_of(k)) is not None)
        entry, _ = client.get(manifest_key(prefix, newest), stale=stale)
        if entry is not None:
            with suppress(ValueError):
                modes = decode(entry.value, newest)
    return _Lost((found[0] if found else last, last), modes)


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
        except (TxnFailed, IntegrityError):
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
    """The records of `revisions`, in order. TxnFailed when one is not kept, IntegrityError
    when one is corrupt."""
    for commit, _ in read_records(client, prefix, revisions, stale):
        yield commit


def read_records(
    client: ConsulClient, prefix: str, revisions: Sequence[int], stale: bool = False
) -> Iterator[tuple[Commit, bytes]]:
    """The records of `revisions`, in order, each with its value as it is stored. TxnFailed
    when one is not kept, IntegrityError when one is corrupt."""
    for start in range(0, len(revisions), _RECORDS_PER_TXN):
        chunk = revisions[start : start + _RECORDS_PER_TXN]
        entries = client.txn_entries([kv_get(log_key(prefix, r)) for r in chunk], stale=stale)
        by_key = {e.key: e for e in entries}
        for revision in chunk:
            key = log_key(prefix, revision)
            value = by_key[key].value
            yield decode_record(key, value, revision), value


def decode_record(key: str, value: bytes, revision: int) -> Commit:
    """Revision `revision`'s record, the value of `key`; IntegrityError naming the key when
    it is corrupt or truncated."""
    try:
        return Commit.decode(value, revision)
    except ValueError as exc:
        raise IntegrityError(
            f"the record {key} is corrupt ({exc}); nothing was changed (restore it from a "
            "backup of the KV store)"
        ) from exc


def manifest_readable(client: ConsulClient, prefix: str, head: Head) -> bool:
    """Whether the head's manifest reads back as its tree (a manifest a later commit replaced
    meanwhile counts as readable: that commit wrote its own)."""
    try:
        read_manifest(client, prefix, head)
    except _CorruptManifest:
        return False
    except Moved:
        return True
    return True


def find_contents(
    client: ConsulClient,
    wanted: Mapping[str, Sequence[str]],
    sizes: Mapping[str, int],
    *,
    stale: bool = False,
) -> dict[str, bytes]:
    """The bytes of each content hash in `wanted`, from the first of its keys that holds
    them (each value checked against its hash), read in transactions; a hash that none of
    its keys holds is left out. `sizes` are the contents' sizes, by hash."""
    found: dict[str, bytes] = {}
    pending = {digest_: list(keys) for digest_, keys in wanted.items() if keys}
    while pending:
        asked = [(keys[0], digest_) for digest_, keys in pending.items()]
        for batch in batches(asked, lambda a: sizes[a[1]], count=TXN_MAX_OPS, total=READ_BATCH):
            values = client.values_of([key for key, _ in batch], stale=stale)
            for key, digest_ in batch:
                value = values.get(key)
                if value is not None and content_hash(value) == digest_:
                    found[digest_] = value
        pending = {d: keys[1:] for d, keys in pending.items() if d not in found and keys[1:]}
    return found


def read_manifest(
    client: ConsulClient, prefix: str, head: Head, *, stale: bool = False
) -> dict[str, FileInfo]:
    key = manifest_key(prefix, head.revision)
    entry, _ = client.get(key, stale=stale)
    if entry is None:
        moved_past(client, prefix, head, stale=stale)
        raise _CorruptManifest(f"the manifest {key} is missing")
    try:
        files = decode(entry.value, head.revision, files=head.commit.files)
        if digest(files) != head.commit.digest:
            raise ValueError("it does not match the head's digest")
    except ValueError as exc:
        raise _CorruptManifest(f"the manifest {entry.key} is corrupt ({exc})") from exc
    return files


def moved_past(client: ConsulClient, prefix: str, head: Head, *, stale: bool = False) -> None:
    """Moved when the head is no longer `head` (a later commit removed what it names);
    else nothing: what it names is gone."""
    now = read_head(client, prefix, stale=stale)
    if now is None or now.index != head.index:
        raise Moved


def _rebuilt(
    client: ConsulClient, prefix: str, head: Head, entries: list[KVEntry]
) -> dict[str, FileInfo] | None:
    """The head's tree without its manifest: each committed value, with the mode the records
    kept last gave its content; None unless that tree has the head's digest exactly (a mode
    the records no longer tell, a value a dead push replaced)."""
    try:
        kept = read_commits(client, prefix, range(head.oldest, head.revision + 1))
        facts: dict[str, FileInfo] = {}
        for commit in kept:
            records.forward(facts, commit.changes)
    except (TxnFailed, IntegrityError):
        return None
    committed = [e for e in entries if e.modify_index <= head.index]
    files, _ = split_keys(prefix, committed)
    tree = {}
    for rel, entry in files.items():
        info = FileInfo(content_hash(entry.value), len(entry.value), DEFAULT_MODE)
        known = facts.get(rel)
        tree[rel] = info._replace(mode=known.mode) if known and known.hash == info.hash else info
    return tree if digest(tree) == head.commit.digest else None


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
