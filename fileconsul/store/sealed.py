"""Signed trees in Consul: a head checked against the keys a node trusts, the tree it covers
followed through the records since the revision the node holds (or read from the manifest and
the tables of strong hashes, for a node that starts from nothing), and a commit sealed for a
signing push (its strong hashes, the tables it rewrites, its manifest)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from fileconsul.errors import IntegrityError, InvalidInput, Untrusted
from fileconsul.model import manifest, records, seal
from fileconsul.model.facts import FileInfo, content_hash
from fileconsul.model.records import Change, Commit, Head
from fileconsul.model.seal import BUCKETS, Seal, Sealed, Trust, Verified
from fileconsul.model.tree import KnownTree
from fileconsul.store import read
from fileconsul.store.client import ConsulClient, TxnFailed
from fileconsul.store.layout import bucket_key, log_key, manifest_key
from fileconsul.store.ops import TXN_MAX_OPS

#: Reads the bytes of the content a signing push vouches for at a path.
BytesOf = Callable[[str], bytes]


def verified_files(
    client: ConsulClient,
    prefix: str,
    head: Head,
    known: KnownTree | None,
    trust: Trust,
    held: int,
    *,
    stale: bool = False,
) -> tuple[dict[str, FileInfo], Verified]:
    """The tree the head's signature covers, and how it was verified: from the tree this node
    `known`s through the chain of records since, else from the manifest and the tables.
    Untrusted when it is not signed by a trusted key, is older than revision `held` (or is
    revision `held` but not the one held), is older than the trust's maximum age, or when
    what it covers cannot be read as it was signed."""
    commit = _whole(client, prefix, head, stale)
    rev_id = seal.signed_revision(prefix, head.history, head, commit, trust)
    sealed_known = known.sealed if known is not None else None
    held_id = (
        sealed_known.id if known is not None and sealed_known and known.revision == held else None
    )
    seal.check_replay(head.revision, held, held_id, rev_id)
    seal.check_age(head.revision, commit.time, time.time(), trust.max_age)
    signature = commit.signature
    assert signature is not None

    def sealed_with(buckets: tuple[str, ...]) -> Sealed:
        return Sealed(rev_id, buckets, signature.key, commit.time)

    if known is not None and sealed_known is not None:
        if known.revision == head.revision and sealed_known.id == rev_id:
            return dict(known.files), Verified(head.revision, sealed_known)
        chained = _chained(client, prefix, head, commit, known, sealed_known, stale)
        if chained is not None:
            files = dict(known.files)
            for link in chained:
                records.forward(files, link.changes)
            buckets = seal.buckets_after(sealed_known.buckets, chained)
            strong = seal.strong_after(chained)
            return files, Verified(head.revision, sealed_with(buckets), strong)
    return _from_manifest(client, prefix, head, commit, sealed_with, stale)


def _whole(client: ConsulClient, prefix: str, head: Head, stale: bool) -> Commit:
    """The head's commit with all its changes: inline in the head, else its record."""
    if head.inline:
        return head.commit
    try:
        (commit,) = read.read_commits(client, prefix, [head.revision], stale)
    except TxnFailed as exc:
        raise Untrusted(
            f"the record {log_key(prefix, head.revision)} of the signed head is missing; "
            "nothing was changed"
        ) from exc
    except IntegrityError as exc:
        raise Untrusted(str(exc)) from exc
    if replace(commit, changes=()) != head.commit:
        raise Untrusted(
            f"the head r{head.revision} does not say what its record says; nothing was changed"
        )
    return commit


def _chained(
    client: ConsulClient,
    prefix: str,
    head: Head,
    commit: Commit,
    known: KnownTree,
    sealed_known: Sealed,
    stale: bool,
) -> list[Commit] | None:
    """The signed revisions from the one held to the head, each naming the one before by its
    id; None when the records since are no longer kept or do not chain (the manifest is
    read instead)."""
    if known.revision >= head.revision or known.revision < head.oldest - 1:
        return None
    between = range(known.revision + 1, head.revision)
    try:
        found = {c.revision: c for c in read.read_commits(client, prefix, between, stale)}
    except (TxnFailed, IntegrityError):
        return None
    held = (known.revision, sealed_known.id)
    return seal.chain(prefix, head.history, commit, held, found)


def _from_manifest(
    client: ConsulClient,
    prefix: str,
    head: Head,
    commit: Commit,
    sealed_with: Callable[[tuple[str, ...]], Sealed],
    stale: bool,
) -> tuple[dict[str, FileInfo], Verified]:
    assert commit.seal is not None
    key = manifest_key(prefix, head.revision)
    entry, _ = client.get(key, stale=stale)
    if entry is None:
        read.moved_past(client, prefix, head, stale=stale)
        raise Untrusted(f"the signed manifest {key} is missing; nothing was changed")
    if seal.strong_hash(entry.value) != commit.seal.manifest:
        raise Untrusted(
            f"the manifest {key} is not the one the signature of the head r{head.revision} "
            "covers: nothing was changed (the next signed push writes it again)"
        )
    try:
        files, buckets = manifest.decode_signed(entry.value, head.revision, files=commit.files)
    except ValueError as exc:
        raise Untrusted(f"the signed manifest {key} is unreadable ({exc})") from exc
    if buckets is None or len(buckets) != BUCKETS:
        raise Untrusted(f"the signed manifest {key} lists no tables of strong hashes")
    strong = read_buckets(client, prefix, buckets, stale=stale)
    if strong.keys() != files.keys():
        raise Untrusted(f"the tables of strong hashes of r{head.revision} do not cover its files")
    return files, Verified(head.revision, sealed_with(buckets), strong, complete=True)


def read_buckets(
    client: ConsulClient, prefix: str, refs: tuple[str, ...], *, stale: bool = False
) -> dict[str, str]:
    """The strong hashes the tables `refs` hold (their keys read together); Untrusted when
    one is missing or not the table its reference names."""
    wanted = {bucket_key(prefix, ref): ref for ref in refs if ref}
    keys = list(wanted)
    found: dict[str, str] = {}
    for start in range(0, len(keys), TXN_MAX_OPS):
        values = client.values_of(keys[start : start + TXN_MAX_OPS], stale=stale)
        for key in keys[start : start + TXN_MAX_OPS]:
            value = values.get(key)
            if value is None:
                raise Untrusted(f"the table of strong hashes {key} is missing")
            try:
                found.update(seal.decode_bucket(value, wanted[key]))
            except ValueError as exc:
                raise Untrusted(f"the table of strong hashes {key} is corrupt ({exc})") from exc
    return found


def strong_of(
    client: ConsulClient, prefix: str, verified: Verified, paths: set[str]
) -> dict[str, str]:
    """The signed strong hash of each of `paths`: known already, else from its table."""
    known = {p: verified.strong[p] for p in paths if p in verified.strong}
    missing = paths - known.keys()
    if missing and not verified.complete:
        tables = {seal.bucket_of(p) for p in missing}
        refs = tuple(verified.sealed.buckets[n] for n in sorted(tables))
        hashes = read_buckets(client, prefix, refs)
        known |= {p: hashes[p] for p in missing if p in hashes}
    return known


# -- sealing a commit ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sealing:
    """A commit sealed: its changes with their strong hashes and its seal, its manifest, the
    tables it writes (key, value), and the state a node holds once it is committed."""

    commit: Commit
    manifest: bytes
    tables: list[tuple[str, bytes]]
    buckets: tuple[str, ...]
    strong: dict[str, str]


def seal_commit(
    client: ConsulClient,
    prefix: str,
    commit: Commit,
    after: Mapping[str, FileInfo],
    base: Verified | None,
    bytes_of: BytesOf,
    *,
    limit: int,
) -> Sealing:
    """Seal `commit` (whose tree is `after`) on the signed revision `base` (None: the first
    signed revision, which vouches for every file as this node holds it). The strong hash of
    each content it brings is of the bytes this node sends; the others come from `base`."""
    previous = _base_hashes(client, prefix, commit, base, after, bytes_of)
    changes = tuple(_sealed_change(c, previous, bytes_of) for c in commit.changes)
    current = dict(previous)
    for change in changes:
        if change.new is None:
            current.pop(change.path, None)
        else:
            current[change.path] = change.new_strong
    touched = set(range(BUCKETS)) if base is None else {seal.bucket_of(c.path) for c in changes}
    refs = list(base.sealed.buckets if base is not None else seal.empty_buckets())
    tables = seal.split(current)
    writes, rewritten = [], []
    for number in sorted(touched):
        hashes = tables.get(number)
        ref = ""
        if hashes:
            value = seal.encode_bucket(hashes)
            ref = seal.bucket_ref(commit.revision, value)
            writes.append((bucket_key(prefix, ref), value))
        if ref != refs[number]:
            rewritten.append((number, ref))
        refs[number] = ref
    value = manifest.encode(after, commit.revision, max_size=limit, buckets=refs)
    parent = (base.revision, base.sealed.id) if base is not None else None
    sealed = replace(
        commit,
        changes=changes,
        seal=Seal(parent, seal.strong_hash(value), tuple(rewritten)),
    )
    strong = {c.path: c.new_strong for c in changes if c.new is not None}
    return Sealing(sealed, value, writes, tuple(refs), strong)


def _base_hashes(
    client: ConsulClient,
    prefix: str,
    commit: Commit,
    base: Verified | None,
    after: Mapping[str, FileInfo],
    bytes_of: BytesOf,
) -> dict[str, str]:
    """The strong hashes the commit builds on: of the paths it changes, in the tables of the
    revision it follows (read from Consul); for a first signed revision, of every path this
    commit keeps unchanged, from the bytes this node holds."""
    changed = {c.path for c in commit.changes}
    if base is not None:
        tables = {seal.bucket_of(p) for p in changed}
        refs = tuple(base.sealed.buckets[n] for n in sorted(tables))
        hashes = read_buckets(client, prefix, refs)
        return {**hashes, **{p: h for p, h in base.strong.items() if p in changed}}
    found = {}
    for path, info in after.items():
        if path in changed:
            continue
        found[path] = _vouched(path, info, bytes_of)
    return found


def _vouched(path: str, info: FileInfo, bytes_of: BytesOf) -> str:
    """The strong hash of this node's copy of `path`, which must be the tree's."""
    try:
        data = bytes_of(path)
    except (OSError, InvalidInput) as exc:
        raise InvalidInput(_not_held(path)) from exc
    if len(data) != info.size or content_hash(data) != info.hash:
        raise InvalidInput(_not_held(path))
    return seal.strong_hash(data)


def _not_held(path: str) -> str:
    return (
        f"a first signed push vouches for every file as this node holds it, and this node "
        f"does not hold {path} as the tree has it: pull first (and look at what you pull), "
        "then push again; nothing was pushed"
    )


def _sealed_change(change: Change, previous: Mapping[str, str], bytes_of: BytesOf) -> Change:
    """The change with the strong hashes of its contents: before, from what it follows (a
    first signed revision does not know them: UNKNOWN), after, of the bytes sent."""
    old_strong = previous.get(change.path, seal.UNKNOWN) if change.old is not None else ""
    new_strong = ""
    if change.new is not None:
        same = change.old is not None and change.old.hash == change.new.hash
        if same and old_strong != seal.UNKNOWN:
            new_strong = old_strong
        else:
            new_strong = seal.strong_hash(bytes_of(change.path))
    return change._replace(old_strong=old_strong, new_strong=new_strong)
