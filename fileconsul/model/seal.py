"""Signed revisions: what a signature covers, the chain from each revision to the one it
follows, the tables of strong hashes a node starts from, and what a node decides about a head.

A signed commit carries a *seal* in its record and its head: the signed revision it follows
(its number and id), the SHA-256 of its manifest value, and the tables of strong hashes it
rewrote; each change carries the SHA-256 of the contents before and after (xxh3 finds a
change; only a cryptographic hash proves one). A revision's *statement* is its commit as a
node reads it (who, when, why, each change with its facts and strong hashes, the tree's file
count and digest), with the prefix, the history and the seal, in canonical JSON; its *id* is
the statement's SHA-256, and the head's signature is Ed25519 over that id. Because each
statement names its parent's id, as a git commit names its parent, one signature on the head
covers every revision back to the one a node holds: a node at revision B checks B+1..H from
the records it reads anyway, and one signature.

A node that starts from nothing checks the manifest by the SHA-256 the statement names, and
each file by its strong hash, found in tables of about BUCKETS paths' worth each (a path's
table is fixed by its name): a push rewrites only the tables of the paths it changed, each
under a key named by its hash, and the manifest lists all of them.

Pure: SHA-256 from hashlib, Ed25519 through `model.signing`; the clock's time is given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import xxhash

from fileconsul.errors import Untrusted
from fileconsul.model.signing import PublicKey, SecretKey

if TYPE_CHECKING:
    from fileconsul.model.records import Commit, Head

FORMAT = "fileconsul-seal/1"
#: Tables of strong hashes per tree: 10,000 files make tables of about 20 KB.
BUCKETS = 64
STRONG_DIGITS = 64
#: The strong hash of a content a first signed revision replaced: not known, never matched.
UNKNOWN = "0" * STRONG_DIGITS
_REVISION_DIGITS = 10
#: What the signature is over: this, then the revision's id.
_DOMAIN = b"fileconsul signed revision\n"
#: A commit's fields the statement leaves out (the seal goes in whole, the signature is over
#: the statement).
_NOT_STATED = ("format", "seal", "signature")


def strong_hash(data: bytes) -> str:
    """The SHA-256 of a file's bytes (64 hex digits): what a signed tree checks each file by."""
    return hashlib.sha256(data).hexdigest()


def bucket_of(path: str) -> int:
    """The table that holds a path's strong hash."""
    return xxhash.xxh3_64_intdigest(path.encode()) % BUCKETS


@dataclass(frozen=True)
class Seal:
    """What a signed commit adds to its record and head."""

    #: The signed revision it follows: (revision, id); None for the first signed revision.
    parent: tuple[int, str] | None
    #: The SHA-256 of its manifest value.
    manifest: str
    #: The tables it rewrote: (table, reference), "" for a table it emptied.
    buckets: tuple[tuple[int, str], ...] = ()

    def encode(self) -> dict[str, Any]:
        return {
            "parent": list(self.parent) if self.parent else None,
            "manifest": self.manifest,
            "buckets": [list(b) for b in self.buckets],
        }

    @classmethod
    def decode(cls, data: Any) -> Seal:
        """ValueError when it is malformed."""
        try:
            parent = data["parent"]
            found = None if parent is None else (int(parent[0]), _hex(parent[1], "parent"))
            buckets = tuple((int(n), str(ref)) for n, ref in data["buckets"])
            if any(not 0 <= n < BUCKETS for n, _ in buckets):
                raise ValueError("a table number out of range")
            return cls(found, _hex(data["manifest"], "manifest"), buckets)
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"malformed seal: {exc!r}") from exc


def _hex(value: Any, what: str) -> str:
    text = str(value)
    if len(text) != STRONG_DIGITS or not all(c in "0123456789abcdef" for c in text):
        raise ValueError(f"malformed seal: its {what} is not a SHA-256")
    return text


@dataclass(frozen=True)
class Signature:
    """The head's signature: the fingerprint of the key that made it, and the signature."""

    key: str
    value: bytes

    def encode(self) -> dict[str, str]:
        return {"key": self.key, "value": base64.b64encode(self.value).decode()}

    @classmethod
    def decode(cls, data: Any) -> Signature:
        try:
            value = base64.b64decode(str(data["value"]), validate=True)
            return cls(str(data["key"]), value)
        except (KeyError, TypeError, binascii.Error, ValueError) as exc:
            raise ValueError(f"malformed signature: {exc!r}") from exc


def _facts(info: Any) -> list[Any] | None:
    return None if info is None else [info.hash, info.size, info.mode]


def statement(prefix: str, history: str, commit: Commit) -> bytes:
    """What a revision's id is the hash of: everything a node builds its tree from."""
    assert commit.seal is not None
    body = {
        "format": FORMAT,
        "prefix": prefix,
        "history": history,
        **{k: v for k, v in commit.fields().items() if k not in _NOT_STATED},
        "seal": commit.seal.encode(),
        "changes": [
            [c.path, c.kind, _facts(c.old), _facts(c.new), c.old_strong, c.new_strong]
            for c in commit.changes
        ],
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def revision_id(prefix: str, history: str, commit: Commit) -> str:
    return hashlib.sha256(statement(prefix, history, commit)).hexdigest()


def sign(key: SecretKey, revision: str) -> Signature:
    """The signature of the revision whose id is `revision`."""
    return Signature(key.public.fingerprint, key.sign(_DOMAIN + revision.encode()))


# -- the tables of strong hashes ---------------------------------------------------------


def encode_bucket(hashes: Mapping[str, str]) -> bytes:
    body = {"format": FORMAT, "hashes": dict(sorted(hashes.items()))}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()


def bucket_ref(revision: int, value: bytes) -> str:
    """A table's reference, also its key's name: the revision that wrote it, and its hash."""
    return f"{revision:0{_REVISION_DIGITS}d}/{strong_hash(value)}"


def decode_bucket(value: bytes, ref: str) -> dict[str, str]:
    """The strong hashes a table holds; ValueError unless it is the table `ref` names."""
    if strong_hash(value) != ref.rpartition("/")[2]:
        raise ValueError("it is not the table the manifest names")
    try:
        data = json.loads(value)
        hashes = data["hashes"]
        if data.get("format") != FORMAT or not isinstance(hashes, dict):
            raise ValueError("not a table of strong hashes")
        return {str(p): _hex(h, "hash") for p, h in hashes.items()}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable table: {exc!r}") from exc


def split(hashes: Mapping[str, str]) -> dict[int, dict[str, str]]:
    """Strong hashes by the table that holds each."""
    tables: dict[int, dict[str, str]] = {}
    for path, digest in hashes.items():
        tables.setdefault(bucket_of(path), {})[path] = digest
    return tables


def empty_buckets() -> tuple[str, ...]:
    return ("",) * BUCKETS


def buckets_after(refs: Sequence[str], commits: Iterable[Commit]) -> tuple[str, ...]:
    """The tables' references once `commits` (in order) have rewritten theirs."""
    found = list(refs)
    for commit in commits:
        assert commit.seal is not None
        for number, ref in commit.seal.buckets:
            found[number] = ref
    return tuple(found)


def strong_after(commits: Iterable[Commit]) -> dict[str, str]:
    """The strong hash of each path's content after `commits` (in order), for the paths
    they changed and kept."""
    found: dict[str, str] = {}
    for commit in commits:
        for change in commit.changes:
            if change.new is None:
                found.pop(change.path, None)
            else:
                found[change.path] = change.new_strong
    return found


# -- what a node decides -----------------------------------------------------------------


@dataclass(frozen=True)
class Trust:
    """The keys a node trusts, and how old a signed head it still applies (None: any)."""

    keys: tuple[PublicKey, ...]
    max_age: float | None = None

    def key(self, fingerprint: str) -> PublicKey | None:
        return next((k for k in self.keys if k.fingerprint == fingerprint), None)

    @property
    def fingerprints(self) -> str:
        return ", ".join(k.fingerprint for k in self.keys)


@dataclass(frozen=True)
class Sealed:
    """A signed revision as a node knows it once verified: its id, its tables, the key that
    signed it and when."""

    id: str
    buckets: tuple[str, ...]
    key: str = ""
    time: str = ""


@dataclass(frozen=True)
class Verified:
    """The head as a node verified it: its seal, and the strong hash of each path whose
    content the node may need (every path when `complete`, else those changed since the
    revision it held)."""

    revision: int
    sealed: Sealed
    strong: Mapping[str, str] = field(default_factory=dict)
    complete: bool = False


def signed_revision(prefix: str, history: str, head: Head, commit: Commit, trust: Trust) -> str:
    """The id of the head's revision (`commit`, its changes whole) once its signature is
    checked; Untrusted saying why not."""
    revision = head.revision
    if commit.signature is None or commit.seal is None:
        raise Untrusted(
            f"the head r{revision} is not signed: nothing was changed (it was pushed without "
            "--sign-key, or written by another tool; the next signed push lifts this)"
        )
    key = trust.key(commit.signature.key)
    if key is None:
        raise Untrusted(
            f"the head r{revision} is signed by key {commit.signature.key}, which this node "
            f"does not trust (it trusts {trust.fingerprints}): nothing was changed"
        )
    revision_hash = revision_id(prefix, history, commit)
    if not key.verifies(_DOMAIN + revision_hash.encode(), commit.signature.value):
        raise Untrusted(
            f"the signature of the head r{revision} does not verify with key {key.fingerprint}: "
            "the head or its record is not what was signed; nothing was changed"
        )
    return revision_hash


def signer(prefix: str, history: str, commit: Commit, trust: Trust | None) -> Signer | None:
    """Who signed a revision as `log` and `show` say it (None: not signed)."""
    signature = commit.signature
    if signature is None or commit.seal is None:
        return None
    key = trust.key(signature.key) if trust is not None else None
    if key is None:
        return Signer(signature.key, trusted=False, valid=None)
    message = _DOMAIN + revision_id(prefix, history, commit).encode()
    valid = key.verifies(message, signature.value)
    return Signer(signature.key, trusted=valid, valid=valid)


@dataclass(frozen=True)
class Signer:
    """The key that signed a revision; whether this node trusts it (a trusted key whose
    signature verifies), and whether the signature verifies (None: no such key here)."""

    key: str
    trusted: bool
    valid: bool | None


def check_replay(revision: int, held: int, held_id: str | None, found: str) -> None:
    """Untrusted when the head is older than the revision held (an old signed head written
    back), or is that revision with another id."""
    if revision < held:
        raise Untrusted(
            f"the head is revision {revision}, older than revision {held} which this node "
            "holds: an old signed head was written back (a replay); nothing was changed"
        )
    if revision == held and held_id is not None and held_id != found:
        raise Untrusted(
            f"the head r{revision} is signed but is not the revision {revision} this node "
            "holds: nothing was changed"
        )


def age(signed_at: str, now: float) -> float:
    """Seconds since a commit's time (ISO 8601, UTC) at `now` (seconds since the epoch)."""
    try:
        return now - datetime.fromisoformat(signed_at).timestamp()
    except ValueError:
        return float("inf")


def check_age(revision: int, signed_at: str, now: float, max_age: float | None) -> None:
    if max_age is None:
        return
    seconds = age(signed_at, now)
    if seconds > max_age:
        raise Untrusted(
            f"the signed head r{revision} is {describe_age(seconds)} old, over --max-age "
            f"{max_age:g} s: the tree may be frozen (a signed `push --renew` refreshes it); "
            "nothing was changed"
        )


def describe_age(seconds: float) -> str:
    if seconds == float("inf"):
        return "of unknown age"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def chain(
    prefix: str,
    history: str,
    head: Commit,
    held: tuple[int, str],
    records: Mapping[int, Commit],
) -> list[Commit] | None:
    """The signed revisions from the one held (not included) to the head, oldest first, when
    each names the one before it by its id; None when the chain does not reach the revision
    held (a record missing, not sealed, or not the one its successor names)."""
    path = [head]
    current = head
    while True:
        assert current.seal is not None
        parent = current.seal.parent
        if parent is None:
            return None
        revision, expected = parent
        if revision == held[0]:
            return path[::-1] if expected == held[1] else None
        found = records.get(revision)
        if revision < held[0] or found is None or found.seal is None:
            return None
        if revision_id(prefix, history, found) != expected:
            return None
        path.append(found)
        current = found


def check_value(path: str, data: bytes, strong: Mapping[str, str]) -> None:
    """Untrusted unless `data` is the content the signature covers for `path`."""
    expected = strong.get(path)
    if expected is None or strong_hash(data) != expected:
        why = "has no signed hash" if expected is None else "does not match its signed hash"
        raise Untrusted(
            f"the value of {path} {why} (it was replaced in Consul, or is another "
            "revision's); nothing was changed"
        )
