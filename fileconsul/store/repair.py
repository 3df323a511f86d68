"""Undoing a push that did not commit, from its record (written before any of its files,
it is the journal of the push under way): by the push itself when it fails, or by the next
push when it died."""

from __future__ import annotations

from collections.abc import Callable

from fileconsul.model.facts import content_hash
from fileconsul.model.records import Commit
from fileconsul.store.batching import batches
from fileconsul.store.client import ConsulClient
from fileconsul.store.layout import blob_key, blobs_prefix, file_key, log_key, manifest_key
from fileconsul.store.ops import TXN_MAX_OPS, Op, kv_delete, kv_delete_tree
from fileconsul.store.prepare import Write, write_of
from fileconsul.store.send import send


def repair(
    client: ConsulClient,
    prefix: str,
    journal: Commit,
    check: Op,
    renew: Callable[[], None] = lambda: None,
) -> list[str]:
    """Undo a push that did not commit, from its record, under the push lock: put back each
    value it replaced (from the contents it kept; a value too large for a transaction as a
    PUT of its own, as it was sent), delete each key it added, then its record, kept contents
    and manifest; every transaction checks the head is still the one it was planned on. The
    paths that could not be put back."""
    changes = list(journal.changes)
    keys = [file_key(prefix, c.path) for c in changes]
    current: dict[str, bytes] = {}
    for batch in batches(keys, lambda _: 1, count=TXN_MAX_OPS, total=TXN_MAX_OPS):
        current.update(client.values_of(batch))
    lost: list[str] = []
    writes: list[Write] = []
    needed = {}
    for change, key in zip(changes, keys, strict=True):
        value = current.get(key)
        found = None if value is None else content_hash(value)
        if change.old is None:
            if change.new is not None and found == change.new.hash:
                writes.append(write_of(key, None, None))
        elif found != change.old.hash:
            needed[key] = change.old
    kept = _read_kept(client, prefix, journal.revision, {info.hash for info in needed.values()})
    for key, old in needed.items():
        if old.hash in kept:
            writes.append(write_of(key, old, kept[old.hash]))
        else:
            lost.append(key)
    send(client, writes, [check], renew=renew)
    client.txn(
        [
            check,
            kv_delete(log_key(prefix, journal.revision)),
            kv_delete(manifest_key(prefix, journal.revision)),
            kv_delete_tree(blobs_prefix(prefix, journal.revision)),
        ]
    )
    return lost


def _read_kept(
    client: ConsulClient, prefix: str, revision: int, hashes: set[str]
) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    keys = [blob_key(prefix, revision, h) for h in sorted(hashes)]
    for batch in batches(keys, lambda _: 1, count=TXN_MAX_OPS, total=TXN_MAX_OPS):
        for key, value in client.values_of(batch).items():
            if content_hash(value) == key.rpartition("/")[2]:
                found[key.rpartition("/")[2]] = value
    return found
