"""The manifest: every committed file's facts, as one compressed value; and the digest, a
checksum of a whole tree that a change updates in proportion to its size.

Format 2 (`<prefix>.fileconsul/manifests/<revision>`) carries its revision; format 1
(`<prefix>/.fileconsul/manifest`, written by fileconsul 0.1) is still read, and replaced by
the next push.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import xxhash

from fileconsul.errors import InvalidInput
from fileconsul.model import columns
from fileconsul.model.facts import FileInfo, Files
from fileconsul.model.paths import MAX_PATH_BYTES

FORMAT = "fileconsul/2"
LEGACY_FORMAT = "fileconsul-manifest/1"
#: The columns of a table of file facts (the manifest's, and the local record's).
FILE_COLUMNS = (
    columns.Column("hashes", hashes=True),
    columns.Column("sizes"),
    columns.Column("modes", most=0o7777),
)
_DIGEST_MOD = 1 << 64
#: No compressed value fileconsul reads unpacks past this (32 MiB of JSON is 10,000 files
#: with paths of 3 KB).
MAX_UNPACKED = 32 * 1024 * 1024
UNPACK_RATIO = 256
_UNPACK_FLOOR = 1024 * 1024
#: A row of a file table at its longest: a path of MAX_PATH_BYTES, each byte escaped in
#: JSON (three bytes per byte at most), with its hash, size and mode.
_LONGEST_ROW = 3 * MAX_PATH_BYTES + 96


class NewerFormat(InvalidInput):
    """The tree was written by a newer fileconsul, in a format this one does not know."""


def check_format(data: Any, what: str) -> None:
    """ValueError unless `data` is an object of fileconsul's format 2; NewerFormat when it
    is of a later one, so an older fileconsul refuses it instead of misreading it."""
    found = data.get("format") if isinstance(data, dict) else None
    if found == FORMAT:
        return
    family, _, version = str(found).partition("/")
    if family == "fileconsul" and version.isdigit() and int(version) > 2:
        raise NewerFormat(
            f"the {what} is in format {found}, written by a newer fileconsul; this one knows "
            f"{FORMAT}: upgrade fileconsul on this node (nothing was changed)"
        )
    raise ValueError(f"not a fileconsul {what}")


def pack(body: dict[str, Any], what: str, max_size: int) -> bytes:
    """`body` as compressed JSON; InvalidInput past `max_size` (one Consul value)."""
    value = zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)
    if len(value) > max_size:
        raise InvalidInput(
            f"the {what} takes {len(value)} bytes, over Consul's {max_size}-byte value limit; "
            "split the tree over several prefixes (nothing was pushed)"
        )
    return value


def unpack_limit(stored: int, rows: int | None = None) -> int:
    """The most bytes a value of `stored` bytes may decompress to: honest JSON of file facts
    compresses at most about 200 to 1 (each row carries a 16-digit hash), a table of `rows`
    rows is at most `rows` times the longest row, and no value unpacks past MAX_UNPACKED."""
    limit = min(MAX_UNPACKED, _UNPACK_FLOOR + UNPACK_RATIO * stored)
    if rows is not None:
        limit = min(limit, _UNPACK_FLOOR + rows * _LONGEST_ROW)
    return limit


def unpack(value: bytes, what: str, *, rows: int | None = None) -> Any:
    """A compressed JSON value; ValueError when it is unreadable, or decompresses past what
    it may hold (`unpack_limit`): a zlib bomb is a corrupt value, never a gigabyte of memory."""
    limit = unpack_limit(len(value), rows)
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(value, limit + 1)
        if len(data) > limit or inflater.unconsumed_tail:
            raise ValueError(f"it decompresses past {limit} bytes, more than it can hold")
        return json.loads(data)
    except (zlib.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable {what}: {exc}") from exc


def encode(
    files: Files, revision: int, *, max_size: int, buckets: Sequence[str] | None = None
) -> bytes:
    """A revision's manifest value: compressed columnar JSON; a signed revision's also lists
    its tables of strong hashes (`buckets`)."""
    body = {"format": FORMAT, "revision": revision, **columns.encode(files, FILE_COLUMNS)}
    if buckets is not None:
        body["buckets"] = list(buckets)
    return pack(body, f"manifest for {len(files)} files", max_size)


def decode(value: bytes, revision: int, *, files: int | None = None) -> dict[str, FileInfo]:
    """The files of revision `revision`'s manifest (of `files` files, when the head says
    how many); ValueError when it is corrupt or of another revision, NewerFormat when a newer
    fileconsul wrote it."""
    return decode_signed(value, revision, files=files)[0]


def decode_signed(
    value: bytes, revision: int, *, files: int | None = None
) -> tuple[dict[str, FileInfo], tuple[str, ...] | None]:
    """The files of a manifest, and the tables of strong hashes it lists (None: it lists
    none, it is not signed)."""
    data = unpack(value, "manifest", rows=files)
    check_format(data, "manifest")
    if data.get("revision") != revision:
        raise ValueError(f"the manifest is of revision {data.get('revision')}, not {revision}")
    buckets = data.get("buckets")
    if buckets is not None and not (
        isinstance(buckets, list) and all(isinstance(b, str) for b in buckets)
    ):
        raise ValueError("its tables of strong hashes are malformed")
    found = columns.decode(data, FILE_COLUMNS, FileInfo)
    return found, None if buckets is None else tuple(buckets)


def decode_legacy(value: bytes) -> dict[str, FileInfo]:
    """A manifest of the first format; ValueError when it is not one."""
    data = unpack(value, "manifest")
    if not isinstance(data, dict) or data.get("format") != LEGACY_FORMAT:
        raise ValueError("not a fileconsul manifest")
    return columns.decode(data, FILE_COLUMNS, FileInfo)


def _entry(path: str, info: FileInfo) -> int:
    return xxhash.xxh3_64_intdigest(f"{path}\0{info.hash}\0{info.size}\0{info.mode}".encode())


def digest(files: Files) -> str:
    """A digest of a whole tree (paths and facts) that a change updates in proportion to its
    size: the sum of a hash of each entry. It is a checksum against accidents, not a proof
    against an adversary: a tree built to collide can share another's digest."""
    return f"{sum(_entry(p, i) for p, i in files.items()) % _DIGEST_MOD:016x}"


def digest_after(
    before: str, changes: Iterable[tuple[str, FileInfo | None, FileInfo | None]]
) -> str:
    """The digest of a tree once each (path, old facts, new facts) is applied to a tree whose
    digest was `before`."""
    total = int(before, 16)
    for path, old, new in changes:
        if old is not None:
            total -= _entry(path, old)
        if new is not None:
            total += _entry(path, new)
    return f"{total % _DIGEST_MOD:016x}"
