"""A revision of another datacenter's tree, made a revision of this one's: what the source
holds for it (its record as stored, and each content it set, wherever the source keeps it
now), and the commit that makes it the target's (prepared and committed as any commit, the
head moved last, naming the source).

A content is read from the target itself when the target already holds it (a mode change, a
copy, a rename), so that only new contents cross between datacenters. Every value is checked
against its hash; a revision whose contents cannot all be found is not written (Incomplete).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from fileconsul.errors import ConflictError, IntegrityError
from fileconsul.model.facts import FileInfo, classify, content_hash, hash_to_flags
from fileconsul.model.manifest import encode
from fileconsul.model.plan import Action
from fileconsul.model.records import Author, Commit, Head, new_head
from fileconsul.model.tree import RemoteTree
from fileconsul.store.batching import batches
from fileconsul.store.client import ConsulClient
from fileconsul.store.layout import (
    blob_key,
    blobs_prefix,
    file_key,
    genesis_key,
    head_key,
    log_key,
    log_prefix,
    manifest_key,
    manifests_prefix,
    revision_of,
)
from fileconsul.store.ops import TXN_MAX_OPS, Op, kv_cas, kv_check_index, kv_delete, kv_delete_tree
from fileconsul.store.prepare import Prepared, prepare, write_of
from fileconsul.store.read import find_contents


class Incomplete(ConflictError):
    """The source does not hold every content of the revision (its tree was deleted, or is
    being rewritten): nothing of it was written."""


class Diverged(IntegrityError):
    """The target's tree is not the source's tree of its revision: the records do not lead
    from one to the other."""


def new_contents(commit: Commit) -> dict[str, int]:
    """Every content a revision's tree has at a path it changed (hash -> size)."""
    return {c.new.hash: c.new.size for c in commit.changes if c.new is not None}


def where_kept(
    prefix: str, commit: Commit, later: Sequence[Commit], head_revision: int
) -> dict[str, list[str]]:
    """Where the source keeps each content `commit` set, by hash, most likely first: kept
    under the first later revision that replaced it, else its own key, else under the
    revision after the head (a commit under way, or one that landed since)."""
    wanted: dict[str, list[str]] = {}
    for change in commit.changes:
        if change.new is None:
            continue
        digest = change.new.hash
        keys = wanted.setdefault(digest, [])
        replaced = _replaced_at(change.path, digest, later)
        if replaced is not None:
            keys.append(blob_key(prefix, replaced, digest))
        keys += [file_key(prefix, change.path), blob_key(prefix, head_revision + 1, digest)]
    return wanted


def _replaced_at(path: str, digest: str, later: Sequence[Commit]) -> int | None:
    for commit in later:
        for change in commit.changes:
            old, new = change.old, change.new
            gone = old is not None and old.hash == digest and (new is None or new.hash != digest)
            if change.path == path and gone:
                return commit.revision
    return None


def gather(
    source: ConsulClient,
    target: ConsulClient,
    tree: RemoteTree,
    wanted: Mapping[str, Sequence[str]],
    sizes: Mapping[str, int],
    known: Mapping[str, bytes] | None = None,
) -> dict[str, bytes]:
    """The bytes of every content in `wanted` (hash -> the source's keys for it): those
    `known` already (read for another target), else from the target's own keys where its tree
    holds that content, else from the source. Incomplete when one is nowhere."""
    found = {digest: value for digest, value in (known or {}).items() if digest in wanted}
    held: dict[str, list[str]] = {}
    for path, info in tree.committed.items():
        if info.hash in wanted and info.hash not in found:
            held.setdefault(info.hash, []).append(file_key(tree.prefix, path))
    found.update(find_contents(target, held, sizes))
    rest = {digest: keys for digest, keys in wanted.items() if digest not in found}
    found.update(find_contents(source, rest, sizes))
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise Incomplete(
            f"{len(missing)} of the {len(wanted)} contents of the revision are not in the "
            "source (its tree was deleted, or is being rewritten); nothing was written"
        )
    return found


def prepare_revision(
    target: ConsulClient,
    tree: RemoteTree,
    commit: Commit,
    record: bytes,
    contents: Mapping[str, bytes],
    *,
    keep: int,
    history: str,
    source_dc: str,
    limit: int,
) -> Prepared:
    """The source's revision `commit` (its record as stored) as the target's next commit,
    on `tree`, the target's committed tree of the revision before, in the source's history
    `history`. Diverged when the result is not the source's revision."""
    actions = [Action(c.path, c.kind, c.new) for c in commit.changes]
    prepared = _prepare(target, tree, actions, commit, contents, keep=keep, limit=limit)
    if prepared.commit != commit:
        raise Diverged(
            f"the target's tree at revision {tree.revision} is not the source's: revision "
            f"{commit.revision} does not follow from it"
        )
    # The source's history, kept here from the first revision the target holds of it.
    since = tree.head.since if tree.head is not None else commit.revision
    head = new_head(prepared.commit, keep=keep, history=history, since=since)
    return replace(prepared, record=record, head=replace(head, source=source_dc))


def prepare_whole(
    target: ConsulClient,
    tree: RemoteTree,
    head: Head,
    files: Mapping[str, FileInfo],
    contents: Mapping[str, bytes],
    *,
    source_dc: str,
    limit: int,
) -> Prepared:
    """The source's head revision as one commit on whatever the target holds. Its record
    lists the changes from the target's tree, and no history before it is kept there (the
    head's oldest is itself). Under way it is journalled as the target's next revision, where
    readers and the next commit look for an unfinished one (they wait for it, or undo it);
    its record and manifest at the head's revision go with its files, before the head."""
    committed = tree.committed
    actions = [
        Action(path, kind, files.get(path))
        for path in sorted(set(files) | set(committed))
        if (kind := classify(committed.get(path), files.get(path))) is not None
    ]
    journal = _prepare(target, tree, actions, head.commit, contents, keep=head.keep, limit=limit)
    landed = replace(journal.commit, revision=head.revision)
    if landed.digest != head.commit.digest:
        raise Diverged(f"the tree of revision {head.revision} does not match its digest")
    last = new_head(landed, keep=head.keep, history=head.history, since=head.revision)
    last = replace(last, source=source_dc)
    if head.revision == journal.revision:
        return replace(journal, head=last)
    prefix = tree.prefix
    own = [
        write_of(log_key(prefix, head.revision), None, landed.encode(max_size=limit)),
        write_of(
            manifest_key(prefix, head.revision),
            None,
            encode(journal.after, head.revision, max_size=limit),
        ),
    ]
    return replace(journal, head=last, files=[*journal.files, *own])


def _prepare(
    target: ConsulClient,
    tree: RemoteTree,
    actions: Sequence[Action],
    commit: Commit,
    contents: Mapping[str, bytes],
    *,
    keep: int,
    limit: int,
) -> Prepared:
    return prepare(
        target,
        tree,
        actions,
        contents={a.path: contents[a.target.hash] for a in actions if a.target is not None},
        limit=limit,
        author=Author(commit.node, commit.user, commit.time),
        message=commit.message,
        keep=keep,
        rollback_of=commit.rollback_of,
    )


def drop_history_from(client: ConsulClient, prefix: str, revision: int) -> int:
    """Delete the records, manifests and kept contents of `revision` and after (a tree of
    the target's own that is replaced by an earlier revision of the source's, or what a
    take that stopped midway left); how many were deleted."""
    logs, _ = client.keys(log_prefix(prefix))
    manifests, _ = client.keys(manifests_prefix(prefix))
    folders, _ = client.keys(blobs_prefix(prefix), separator="/")
    doomed = [kv_delete(k) for k in logs + manifests if (revision_of(k) or 0) >= revision]
    doomed += [kv_delete_tree(k) for k in folders if (revision_of(k) or 0) >= revision]
    _in_batches(client, doomed)
    return len(doomed)


def wipe(client: ConsulClient, tree: RemoteTree, *, history: bool) -> None:
    """Delete the tree's files (and, with `history`, its history and head) at once, if its
    head is still the one read: a source deleted whole, mirrored (`--mirror-wipe`)."""
    prefix = tree.prefix
    ops: list[Op] = [kv_delete_tree(prefix + "/")]
    if tree.head is not None:
        ops.insert(0, kv_check_index(head_key(prefix), tree.head.index))
        if history:
            ops += [
                kv_delete_tree(log_prefix(prefix)),
                kv_delete_tree(manifests_prefix(prefix)),
                kv_delete_tree(blobs_prefix(prefix)),
                kv_delete(head_key(prefix)),
                kv_delete(genesis_key(prefix)),
            ]
    client.txn(ops)


def promote(client: ConsulClient, prefix: str, head: Head) -> None:
    """Make a replica a tree of its own: its head, the same revision, no longer names a
    source (check-and-set: TxnFailed when it moved since it was read)."""
    value = replace(head, source=None).encode()
    client.txn([kv_cas(head_key(prefix), value, hash_to_flags(content_hash(value)), head.index)])


def _in_batches(client: ConsulClient, ops: Iterable[Op]) -> None:
    for batch in batches(list(ops), lambda _: 1, count=TXN_MAX_OPS, total=TXN_MAX_OPS):
        client.txn(batch)
