"""The remote tree: what Consul holds under `<prefix>/`, read as cheaply as it can be.

Fast path: when the X-Consul-Index of a `?keys` listing equals the manifest's ModifyIndex and
the keys are the manifest's paths, nothing was written after the last commit and the manifest
is the tree: no values are read. Otherwise every value is read in one transaction that also
reads the push lock, so a half-written push is never mistaken for a tree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fileconsul.consul import ConsulClient, KVEntry, kv_get_tree
from fileconsul.errors import ConflictError
from fileconsul.fileinfo import DEFAULT_MODE, FileInfo, content_hash, hash_to_flags
from fileconsul.keys import file_key, is_internal, lock_key, manifest_key, unsafe_reason
from fileconsul.manifest import decode


@dataclass
class RemoteTree:
    prefix: str
    files: dict[str, FileInfo] = field(default_factory=dict)
    #: ModifyIndex of the manifest key (0 when absent): the check-and-set index of the next push.
    manifest_index: int = 0
    #: ModifyIndex of the last valid commit (0 when the manifest is absent or corrupt).
    committed_index: int = 0
    #: Values already read and verified (the slow path reads them all).
    values: dict[str, bytes] = field(default_factory=dict)
    #: Paths whose key's Flags do not carry the content hash (written by another tool).
    adopt: set[str] = field(default_factory=set)
    #: (key, reason) of keys that can never be files; reported and skipped.
    unsafe: list[tuple[str, str]] = field(default_factory=list)
    #: (path, reason) of values that contradict the manifest; never written to disk.
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    #: Paths holding values of a push that never committed; the manifest's state is used.
    uncommitted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fast: bool = False
    #: The X-Consul-Index of the listing the fast path trusted (0 otherwise).
    listing_index: int = 0

    def plans_like(self, other: RemoteTree) -> bool:
        """Whether a push planned on `other` plans the same on this tree: the same files (so
        the same values), check-and-set index, commit and keys to adopt."""
        return (
            self.manifest_index == other.manifest_index
            and self.committed_index == other.committed_index
            and self.adopt == other.adopt
            and self.files == other.files
        )


def _split_keys(prefix: str, keys: list[str], tree: RemoteTree) -> set[str]:
    """The safe file paths among `keys`; unsafe keys are recorded on `tree`."""
    paths: set[str] = set()
    start = len(prefix) + 1
    for key in keys:
        rel = key[start:]
        if is_internal(rel):
            continue
        reason = "a key equal to the prefix" if rel == "" else unsafe_reason(rel)
        if reason is not None:
            tree.unsafe.append((key, reason))
        else:
            paths.add(rel)
    return paths


def _parse_manifest(entry: KVEntry | None, tree: RemoteTree) -> dict[str, FileInfo] | None:
    if entry is None:
        return None
    tree.manifest_index = entry.modify_index
    try:
        if entry.flags != hash_to_flags(content_hash(entry.value)):
            raise ValueError("its value does not match the hash in its Flags")
        files = decode(entry.value)
    except ValueError as exc:
        tree.warnings.append(
            f"the manifest {manifest_key(tree.prefix)} is corrupt ({exc}); reading every value "
            "instead (the next push rewrites it)"
        )
        return None
    tree.committed_index = entry.modify_index
    return files


def read(
    client: ConsulClient,
    prefix: str,
    *,
    lock_wait: float = 30.0,
    stale: bool = False,
    session: str | None = None,
) -> RemoteTree:
    """The remote tree; `session` is the caller's own push lock, which it need not wait for."""
    tree = RemoteTree(prefix)
    entry, _ = client.get(manifest_key(prefix), stale=stale)
    manifest = _parse_manifest(entry, tree)
    keys, index = client.keys(prefix + "/", stale=stale)
    paths = _split_keys(prefix, keys, tree)
    if manifest is not None and index == tree.committed_index and paths == set(manifest):
        tree.files = manifest
        tree.fast = True
        tree.listing_index = index
        return tree
    return read_values(client, prefix, lock_wait=lock_wait, session=session)


def unchanged_since(client: ConsulClient, tree: RemoteTree) -> bool:
    """Whether nothing under the prefix was written since `tree` was read on the fast path:
    the index of a one-level listing is the highest anywhere below it, and cheap to get."""
    if not tree.fast:
        return False
    _, index = client.keys(tree.prefix + "/", separator="/")
    return index == tree.listing_index


def read_values(
    client: ConsulClient, prefix: str, *, lock_wait: float, session: str | None = None
) -> RemoteTree:
    """Every value under the prefix, read together with the lock so no push is half seen."""
    deadline = time.monotonic() + lock_wait
    while True:
        entries = client.txn_entries([kv_get_tree(prefix + "/"), kv_get_tree(lock_key(prefix))])
        lock = [e for e in entries if e.key == lock_key(prefix) and e.session != session]
        if not lock:
            return from_entries(prefix, [e for e in entries if e.key != lock_key(prefix)])
        wait_for_lock(client, prefix, deadline)


def wait_for_lock(client: ConsulClient, prefix: str, deadline: float) -> None:
    """Block until the push lock is gone, or raise ConflictError at the deadline."""
    index = None
    while (left := deadline - time.monotonic()) > 0:
        entry, index = client.get(lock_key(prefix), index=index, wait=min(left, 10.0))
        if entry is None or not entry.session:
            return
    raise ConflictError(
        f"a push has held {lock_key(prefix)} past the wait; retry when it finishes "
        "(or raise --lock-wait)"
    )


def from_entries(prefix: str, entries: list[KVEntry]) -> RemoteTree:
    """Build the tree from full entries (a get-tree, a ?recurse or a consul-watch payload)."""
    tree = RemoteTree(prefix)
    by_key = {e.key: e for e in entries}
    manifest = _parse_manifest(by_key.get(manifest_key(prefix)), tree) or {}
    for rel in sorted(_split_keys(prefix, list(by_key), tree)):
        _add_entry(tree, rel, by_key[file_key(prefix, rel)], manifest.get(rel))
    # A path in the manifest whose key is gone was deleted after the commit: it stays deleted.
    return tree


def _add_entry(tree: RemoteTree, rel: str, entry: KVEntry, listed: FileInfo | None) -> None:
    digest = content_hash(entry.value)
    flags_ok = entry.flags == hash_to_flags(digest)
    committed = bool(tree.committed_index) and entry.modify_index <= tree.committed_index
    if committed and listed is not None and listed.hash != digest:
        # Keep the manifest's claim: a pull that needs the value fails verification on it.
        tree.corrupt.append((rel, "its value does not match the manifest's hash"))
        tree.files[rel] = listed
        return
    if not committed and flags_ok and tree.committed_index:
        # Written by a fileconsul push that never committed: keep the committed state.
        tree.uncommitted.append(rel)
        if listed is not None:
            tree.files[rel] = listed
        return
    mode = listed.mode if listed is not None else DEFAULT_MODE
    tree.files[rel] = FileInfo(digest, len(entry.value), mode)
    tree.values[rel] = entry.value
    if not flags_ok:
        tree.adopt.add(rel)
