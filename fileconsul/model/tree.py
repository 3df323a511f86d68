"""What Consul's entries for a tree mean: the remote tree as fileconsul plans on it.

No I/O here: `store.read` gathers the head, the committed tree and (when something was
written after the commit) every entry under the prefix; this decides what each value is. A
value written after the commit belongs to a push under way (waited for by the reader), to a
push that died (ignored: the committed state holds, and its content is where that push set it
aside), or to another tool (taken, to be adopted by the next push).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from fileconsul.errors import IntegrityError
from fileconsul.model import manifest
from fileconsul.model.facts import DEFAULT_MODE, FileInfo, content_hash, hash_to_flags
from fileconsul.model.paths import is_internal, unsafe_reason
from fileconsul.model.records import Change, Commit, Head
from fileconsul.model.seal import Sealed, Verified


class KVEntry(NamedTuple):
    """One key as Consul returns it."""

    key: str
    value: bytes
    flags: int
    modify_index: int
    session: str | None = None


def hash_matches(entry: KVEntry) -> bool:
    """Whether the entry's Flags hold the hash of its value, as fileconsul writes them."""
    return entry.flags == hash_to_flags(content_hash(entry.value))


@dataclass(frozen=True)
class KnownTree:
    """A committed tree a node knows: its revision, the index it landed at, its digest and
    its files."""

    revision: int
    index: int
    digest: str
    files: Mapping[str, FileInfo]
    #: The signed revision as this node verified it (None: not signed, or not verified).
    sealed: Sealed | None = None


@dataclass(frozen=True)
class RemoteTree:
    prefix: str
    head: Head | None = None
    #: The committed tree: the head's manifest, or a first-format manifest; empty when none.
    committed: Mapping[str, FileInfo] = field(default_factory=dict)
    #: The tree as it stands: the committed one, and what other tools wrote since.
    files: Mapping[str, FileInfo] = field(default_factory=dict)
    #: The index the committed tree landed at; 0 when nothing was committed.
    commit_index: int = 0
    #: The ModifyIndex of a first-format manifest (`<prefix>/.fileconsul/manifest`), else 0.
    legacy_index: int = 0
    #: Values already read, each matching `files`.
    values: Mapping[str, bytes] = field(default_factory=dict)
    #: Paths whose keys another tool wrote (no hash in their Flags): the next push rewrites them.
    adopt: frozenset[str] = frozenset()
    #: Paths whose committed content is not in their own key (a push that did not commit
    #: replaced it) but where that push set it aside.
    set_aside: frozenset[str] = frozenset()
    #: (key, reason) of keys that can never be files; reported and skipped.
    unsafe: tuple[tuple[str, str], ...] = ()
    #: (path, reason) of values that contradict the commit; never written to disk.
    corrupt: tuple[tuple[str, str], ...] = ()
    #: Paths whose keys hold values of a push that has not committed; the committed state holds.
    uncommitted: tuple[str, ...] = ()
    #: The record of the push those values belong to (its node and time), when it left one.
    dead_push: Commit | None = None
    warnings: tuple[str, ...] = ()
    #: Every file of the committed tree is gone: another tool deleted the prefix.
    wiped: bool = False
    #: Nothing was written under the prefix since the commit: no value was read.
    fast: bool = False
    #: The committed tree could not be read (its manifest is corrupt): `committed` is empty.
    unknown: bool = False
    #: The head is gone but a history remains: its (first, last) revisions. Nothing is
    #: planned on such a tree but a new history (`push --new-history`).
    orphaned: tuple[int, int] | None = None
    #: The signed head as this node verified it (its signer, its strong hashes), when it
    #: was read with trusted keys; `committed` is then the tree the signature covers.
    verified: Verified | None = None
    #: Paths whose keys were written after the commit, by anything but a push under way.
    late: frozenset[str] = frozenset()
    #: With trust: paths (and unsafe keys) whose keys hold what the signed tree does not (a
    #: write by another tool): never taken; a signed push puts them back.
    foreign: tuple[str, ...] = ()
    #: The highest revision number known to be taken (a signed push that builds on the
    #: revision it holds, under a head written back, numbers its commit after it).
    floor: int = 0

    @property
    def revision(self) -> int:
        return self.head.revision if self.head else 0

    @property
    def next_revision(self) -> int:
        """The number the next commit takes: after the head's, or after every revision of a
        history whose head was lost."""
        if self.head is None and self.orphaned is not None:
            return max(self.orphaned[1], self.floor) + 1
        return max(self.revision, self.floor) + 1

    @property
    def known(self) -> KnownTree | None:
        """The committed tree, as a node's record keeps it (None before the first revision, or
        when it could not be read)."""
        if self.head is None or self.unknown:
            return None
        verified = self.verified
        if verified is not None and verified.revision != self.head.revision:
            return None  # a signed push's base, not the head: read again next time
        return KnownTree(
            self.head.revision,
            self.commit_index,
            self.head.commit.digest,
            dict(self.committed),
            verified.sealed if verified else None,
        )


def committed_tree(head: Head | None, prefix: str, files: Mapping[str, FileInfo]) -> RemoteTree:
    """The tree when nothing was written under the prefix since the commit `head`."""
    index = head.index if head is not None else 0
    return RemoteTree(prefix, head, dict(files), dict(files), index, fast=True)


def parse_head(entry: KVEntry) -> Head:
    """The head in an entry; IntegrityError when it is corrupt, NewerFormat when a newer
    fileconsul wrote it."""
    try:
        if not hash_matches(entry):
            raise ValueError("its value does not match the hash in its Flags")
        return Head.decode(entry.value, entry.modify_index)
    except ValueError as exc:
        raise IntegrityError(
            f"the head {entry.key} is corrupt ({exc}); no change can be planned on it: "
            "restore it from a backup of the KV store"
        ) from exc


def legacy_manifest(entry: KVEntry) -> tuple[dict[str, FileInfo] | None, str | None]:
    """The files of a first-format manifest, or None and why it cannot be read."""
    try:
        if not hash_matches(entry):
            raise ValueError("its value does not match the hash in its Flags")
        return manifest.decode_legacy(entry.value), None
    except ValueError as exc:
        return None, (
            f"the manifest {entry.key} is corrupt ({exc}); reading every value instead "
            "(the next push replaces it)"
        )


@dataclass
class _Building:
    """A tree while `from_entries` decides what each value is."""

    committed: dict[str, FileInfo]
    commit_index: int
    head: Head | None
    dead_push: Commit | None
    modes: dict[str, FileInfo]
    files: dict[str, FileInfo] = field(default_factory=dict)
    values: dict[str, bytes] = field(default_factory=dict)
    adopt: set[str] = field(default_factory=set)
    set_aside: set[str] = field(default_factory=set)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    uncommitted: list[str] = field(default_factory=list)
    late: set[str] = field(default_factory=set)

    def keep_committed(self, rel: str) -> None:
        """The committed state of `rel` holds; its content is where the push that replaced it
        set it aside, when that push left a record."""
        self.files[rel] = self.committed[rel]
        if self.dead_push is not None:
            self.set_aside.add(rel)


def from_entries(
    prefix: str,
    entries: Sequence[KVEntry],
    head: Head | None,
    committed: Mapping[str, FileInfo],
    *,
    legacy: KVEntry | None = None,
    record: KVEntry | None = None,
    warnings: tuple[str, ...] = (),
    unknown: bool = False,
    orphaned: tuple[int, int] | None = None,
    modes: Mapping[str, FileInfo] | None = None,
) -> RemoteTree:
    """The tree from every entry under the prefix, the head and its committed tree; `legacy`
    is a first-format manifest, `record` the record of the revision after the head (a push
    that has not committed). `modes` are the facts a lost history's last manifest kept: a
    value with the hash it listed takes its mode."""
    files, unsafe = split_keys(prefix, entries)
    unsafe += _clashing(prefix, files, committed)
    notes = list(warnings)
    legacy_index = 0
    dead_push = None
    if head is not None:
        dead_push, note = _dead_push(record, head.revision + 1)
        notes += [note] if note else []
    elif legacy is not None:
        legacy_files, note = legacy_manifest(legacy)
        notes += [note] if note else []
        if legacy_files is not None:
            committed, legacy_index = legacy_files, legacy.modify_index
    index = head.index if head is not None else legacy_index
    tree = _Building(dict(committed), index, head, dead_push, dict(modes or {}))
    pending = {c.path: c for c in dead_push.changes} if dead_push else {}
    for rel in sorted(files):
        _add_entry(tree, rel, files[rel], pending.get(rel))
    for rel in tree.committed.keys() - files.keys():
        change = pending.get(rel)
        if change is not None and change.new is None:
            tree.keep_committed(rel)  # deleted by the push that did not commit
        # else: deleted by another tool after the commit, and so deleted
    return RemoteTree(
        prefix,
        head,
        tree.committed,
        tree.files,
        index,
        legacy_index,
        tree.values,
        frozenset(tree.adopt),
        frozenset(tree.set_aside),
        unsafe,
        tuple(tree.corrupt),
        tuple(tree.uncommitted),
        dead_push,
        tuple(notes),
        wiped=bool(tree.committed) and not files,
        unknown=unknown,
        orphaned=orphaned,
        late=frozenset(tree.late),
    )


def trusted(tree: RemoteTree, verified: Verified) -> RemoteTree:
    """The tree as a node that verifies signatures plans on it: the committed tree the
    signature covers, with the values read that claim to be its own (each is checked by its
    strong hash before it is written). Whatever else the keys hold is foreign: another
    tool's writes, deletes and unsafe keys are named, never taken."""
    committed = tree.committed
    # Nothing was written under the prefix since the commit: the tree is the committed one.
    changed = set() if tree.fast else {p for p, _ in tree.files.items() ^ committed.items()}
    foreign = sorted(changed | (tree.late - tree.set_aside) | tree.adopt)
    foreign += [key for key, _ in tree.unsafe]
    values = {p: v for p, v in tree.values.items() if p in committed and p not in foreign}
    return replace(
        tree,
        files=dict(committed),
        values=values,
        adopt=frozenset(),
        unsafe=(),
        wiped=False,
        verified=verified,
        foreign=tuple(foreign),
    )


def clashes(paths: Iterable[str]) -> list[tuple[str, str]]:
    """(file, file below it) for each path that is also the directory of another: a tree
    that cannot be a directory on any disk."""
    ordered = sorted(paths)
    found = []
    for path in ordered:
        below = path + "/"
        at = bisect.bisect_left(ordered, below)
        while at < len(ordered) and ordered[at].startswith(below):
            found.append((path, ordered[at]))
            at += 1
    return found


def _clashing(
    prefix: str, files: dict[str, KVEntry], committed: Mapping[str, FileInfo]
) -> tuple[tuple[str, str], ...]:
    """Take out of `files` the keys of each file that is also another's directory (another
    tool wrote them: a commit never holds both): the one not committed, or both when neither
    or both are. Their (key, reason)."""
    doomed: dict[str, str] = {}
    for outer, inner in clashes(files):
        reason = f"{outer} and {inner} are both keys: a file cannot also be a directory"
        for path in [p for p in (outer, inner) if p not in committed] or [outer, inner]:
            doomed.setdefault(path, reason)
    for path in doomed:
        del files[path]
    return tuple((f"{prefix}/{path}", why) for path, why in sorted(doomed.items()))


def split_keys(
    prefix: str, entries: Sequence[KVEntry]
) -> tuple[dict[str, KVEntry], tuple[tuple[str, str], ...]]:
    """The entries that are files, by relative path, and (key, reason) of those that can
    never be: unsafe names, fileconsul's temporary names, another tree's history."""
    files: dict[str, KVEntry] = {}
    unsafe: list[tuple[str, str]] = []
    start = len(prefix) + 1
    for entry in entries:
        if not entry.key.startswith(prefix + "/") and entry.key != prefix:
            continue
        rel = entry.key[start:]
        if is_internal(rel):
            continue
        reason = "a key equal to the prefix" if rel == "" else unsafe_reason(rel)
        if reason is not None:
            unsafe.append((entry.key, reason))
        else:
            files[rel] = entry
    return files, tuple(unsafe)


def _dead_push(entry: KVEntry | None, revision: int) -> tuple[Commit | None, str | None]:
    if entry is None:
        return None, None
    try:
        return Commit.decode(entry.value, revision), None
    except ValueError as exc:
        return None, f"the record {entry.key} is unreadable ({exc})"


def _add_entry(tree: _Building, rel: str, entry: KVEntry, pending: Change | None) -> None:
    digest = content_hash(entry.value)
    listed = tree.committed.get(rel)
    flags_ok = entry.flags == hash_to_flags(digest)
    if tree.commit_index and entry.modify_index <= tree.commit_index and listed is not None:
        if listed.hash != digest:
            # Keep the commit's claim: a pull that needs the value fails verification on it.
            tree.corrupt.append((rel, "its value does not match the committed hash"))
            tree.files[rel] = listed
            return
    elif _uncommitted(tree, entry, pending, digest, flags_ok):
        tree.uncommitted.append(rel)
        if listed is not None:
            tree.keep_committed(rel)
        return
    if tree.commit_index and entry.modify_index > tree.commit_index:
        tree.late.add(rel)
    remembered = tree.modes.get(rel)
    if listed is not None:
        mode = listed.mode
    elif remembered is not None and remembered.hash == digest:
        mode = remembered.mode
    else:
        mode = DEFAULT_MODE
    tree.files[rel] = FileInfo(digest, len(entry.value), mode)
    tree.values[rel] = entry.value
    if not flags_ok:
        tree.adopt.add(rel)


def _uncommitted(
    tree: _Building, entry: KVEntry, pending: Change | None, digest: str, flags_ok: bool
) -> bool:
    """Whether a value written after the commit belongs to a push that has not committed."""
    if entry.modify_index <= tree.commit_index:
        return False
    if tree.head is not None:
        return pending is not None and pending.new is not None and pending.new.hash == digest
    # The first format kept no record of a push under way: a value with its hash in its
    # Flags, written after the manifest, was one.
    return bool(tree.commit_index) and flags_ok
