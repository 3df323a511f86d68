"""A commit made ready to send: the tree it was planned on, the tree it makes, its record,
head and manifest, every key it writes and the contents it replaces (kept under its
revision, so that history costs what changes)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from fileconsul.errors import ConflictError, InvalidInput
from fileconsul.model import records
from fileconsul.model.facts import FileInfo, Files, content_hash, update
from fileconsul.model.manifest import digest, encode
from fileconsul.model.plan import Action
from fileconsul.model.records import Author, Change, Commit, Head
from fileconsul.model.seal import Sealed, Verified, revision_id, sign
from fileconsul.model.signing import SecretKey
from fileconsul.model.tree import RemoteTree, clashes
from fileconsul.store import sealed
from fileconsul.store.client import ConsulClient
from fileconsul.store.layout import blob_key, content_key, file_key, log_key, manifest_key
from fileconsul.store.read import find_contents

#: Reads a local file's bytes for a push (its relative path): the bytes the store sends when
#: the plan did not keep them, checked against the planned hash before they go.
Source = Callable[[str], bytes]


#: Room kept in each transaction body for its checks and the envelope.
ENVELOPE = 1024


def b64_len(size: int) -> int:
    """The length of `size` bytes in base64, as values travel in a transaction."""
    return 4 * ((size + 2) // 3)


def _json_len(text: str) -> int:
    """At most how long `text` is as a JSON string (a non-ASCII character can take 12 bytes)."""
    return len(text) + 3 if text.isascii() else 12 * len(text) + 3


class Write(NamedTuple):
    """One key a commit writes: a file (no target: deleted) or a kept content."""

    key: str
    target: FileInfo | None
    #: The bytes, when known already; else read from the local file `path`.
    value: bytes | None
    path: str
    #: About how many bytes of JSON its operation takes in a transaction.
    cost: int


def write_of(key: str, target: FileInfo | None, value: bytes | None, path: str = "") -> Write:
    size = target.size if target else 0
    return Write(key, target, value, path, b64_len(size) + 2 * _json_len(key) + 128)


def value_write(key: str, value: bytes) -> Write:
    """A write of bytes that are not a file (no hash in its Flags), costed by its size."""
    return Write(key, None, value, "", b64_len(len(value)) + 2 * _json_len(key) + 128)


def cost(write: Write) -> int:
    return write.cost


@dataclass(frozen=True)
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
    #: Where the bytes of a file write without a value come from.
    source: Source | None = None
    #: A signed commit: what this node holds once it is committed.
    verified: Verified | None = None

    @property
    def revision(self) -> int:
        return self.commit.revision

    @property
    def metadata(self) -> tuple[Write, Write]:
        """The record and the manifest: the journal of the push, written before its files."""
        prefix = self.tree.prefix
        return (
            value_write(log_key(prefix, self.revision), self.record),
            value_write(manifest_key(prefix, self.revision), self.manifest),
        )

    def content(self, write: Write) -> bytes:
        """The bytes to write, re-checked against the hash the plan was made with."""
        if write.value is not None:
            return write.value
        assert write.target is not None
        assert self.source is not None
        data = self.source(write.path)
        if content_hash(data) != write.target.hash:
            raise ConflictError(
                f"{write.path} changed while it was being pushed; run push again when it is quiet"
            )
        return data


def files_after(tree_files: Files, actions: Sequence[Action]) -> dict[str, FileInfo]:
    """The tree once `actions` are applied to it."""
    files = dict(tree_files)
    update(files, ((a.path, a.target) for a in actions))
    return files


def prepare(
    client: ConsulClient,
    tree: RemoteTree,
    actions: Sequence[Action],
    *,
    contents: Mapping[str, bytes],
    source: Source | None = None,
    limit: int,
    author: Author,
    message: str,
    keep: int,
    rollback_of: int | None = None,
    signer: SecretKey | None = None,
    put_back: Sequence[str] = (),
) -> Prepared:
    """The commit of `actions` on `tree` (keys another tool wrote are adopted with it):
    its record, head, manifest, the keys it writes and the contents it replaces. A file's
    bytes are `contents[path]`, else read from `source` as they are sent. With `signer`, the
    commit is sealed and its head signed, and the keys of `put_back` (foreign writes on a
    signed tree) are set back to the tree's content (from `source`) or deleted."""
    prefix = tree.prefix
    after = files_after(tree.files, actions)
    clashing = clashes(after)
    if clashing:
        outer, inner = clashing[0]
        raise InvalidInput(
            f"refusing to commit a tree where {outer} is a file and a directory (of {inner}); "
            "nothing was pushed (remove one of them in Consul)"
        )
    changed = {a.path for a in actions}
    files = [
        write_of(file_key(prefix, a.path), a.target, contents.get(a.path), a.path) for a in actions
    ]
    files += [
        write_of(file_key(prefix, p), tree.files[p], tree.values[p], p)
        for p in sorted(tree.adopt - changed)
        if p in tree.values and p in after
    ]
    files += [
        write_of(file_key(prefix, p), after.get(p), None, p) for p in put_back if p not in changed
    ]
    changes = records.diff(tree.committed, after)
    revision = tree.next_revision
    follows_head = tree.verified is None or tree.verified.revision == tree.revision
    if tree.head is not None and not tree.unknown and follows_head:
        new_digest = records.digest_after(tree.head.commit.digest, changes)
    else:
        new_digest = digest(after)
    commit = records.new_commit(
        revision,
        changes,
        after,
        new_digest,
        author=author,
        message=message,
        rollback_of=rollback_of,
    )
    if tree.head is not None and tree.head.history:
        head = records.new_head(commit, keep=keep, history=tree.head.history, since=tree.head.since)
    elif tree.head is not None:  # a head from before histories had names: it gets one
        head = records.new_head(commit, keep=keep, history=secrets.token_hex(8))
    else:
        head = records.new_head(commit, keep=keep, history=secrets.token_hex(8), since=revision)
    kept = _kept(client, tree, changes, revision, keep)
    manifest, verified = None, None
    if signer is not None:
        commit, head, manifest, verified, tables = _signed(
            client, tree, commit, head, after, signer, _bytes_of(contents, source), limit
        )
        kept += tables
    return Prepared(
        tree,
        after,
        commit,
        head,
        files,
        kept,
        manifest if manifest is not None else encode(after, revision, max_size=limit),
        commit.encode(max_size=limit),
        limit,
        source,
        verified,
    )


def _bytes_of(contents: Mapping[str, bytes], source: Source | None) -> Source:
    def bytes_of(path: str) -> bytes:
        known = contents.get(path)
        if known is not None:
            return known
        assert source is not None
        return source(path)

    return bytes_of


def _signed(
    client: ConsulClient,
    tree: RemoteTree,
    commit: Commit,
    head: Head,
    after: dict[str, FileInfo],
    signer: SecretKey,
    bytes_of: Source,
    limit: int,
) -> tuple[Commit, Head, bytes, Verified, list[Write]]:
    """The commit sealed and signed, its head, its manifest, what a node holds once it is
    committed, and the tables of strong hashes it writes."""
    sealing = sealed.seal_commit(
        client, tree.prefix, commit, after, tree.verified, bytes_of, limit=limit
    )
    revision_hash = revision_id(tree.prefix, head.history, sealing.commit)
    commit = replace(sealing.commit, signature=sign(signer, revision_hash))
    head = replace(head, commit=commit if head.inline else replace(commit, changes=()))
    state = Sealed(revision_hash, sealing.buckets, signer.public.fingerprint, commit.time)
    verified = Verified(commit.revision, state, sealing.strong, complete=tree.verified is None)
    tables = [value_write(key, value) for key, value in sealing.tables]
    return commit, head, sealing.manifest, verified, tables


def _kept(
    client: ConsulClient, tree: RemoteTree, changes: Sequence[Change], revision: int, keep: int
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
    found = _read_contents(client, tree, list(replaced.values()))
    return [
        write_of(blob_key(tree.prefix, revision, digest_), FileInfo(digest_, len(data)), data)
        for digest_, data in sorted(found.items())
    ]


def _read_contents(
    client: ConsulClient, tree: RemoteTree, changes: list[Change]
) -> dict[str, bytes]:
    """The committed content of each change's old state, by hash, where it can still be
    read: a value read already, the key itself, or where a push that did not commit kept it."""
    found: dict[str, bytes] = {}
    wanted: dict[str, list[str]] = {}
    for change in changes:
        assert change.old is not None
        value = tree.values.get(change.path)
        if value is not None and content_hash(value) == change.old.hash:
            found[change.old.hash] = value
        else:
            wanted.setdefault(change.old.hash, []).append(content_key(tree, change.path))
    sizes = {c.old.hash: c.old.size for c in changes if c.old is not None}
    return {**find_contents(client, wanted, sizes), **found}
