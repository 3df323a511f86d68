"""The remote commit record (`<prefix>/.fileconsul/manifest`): every committed file's facts."""

from __future__ import annotations

import json
import zlib

from fileconsul import columns
from fileconsul.errors import InvalidInput
from fileconsul.fileinfo import FileInfo, Files

FORMAT = "fileconsul-manifest/1"
#: The columns of a table of file facts (the manifest's, and the local record's).
FILE_COLUMNS = (
    columns.Column("hashes", hashes=True),
    columns.Column("sizes"),
    columns.Column("modes", most=0o7777),
)


def encode(files: Files, *, max_size: int) -> bytes:
    """The manifest's value: zlib-compressed columnar JSON; InvalidInput past `max_size`."""
    body = {"format": FORMAT, **columns.encode(files, FILE_COLUMNS)}
    value = zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)
    if len(value) > max_size:
        raise InvalidInput(
            f"the manifest for {len(files)} files takes {len(value)} bytes, over Consul's "
            f"{max_size}-byte value limit; split the tree over several prefixes"
        )
    return value


def decode(value: bytes) -> dict[str, FileInfo]:
    """Parse a manifest value; ValueError when it is corrupt, truncated or of another format."""
    try:
        data = json.loads(zlib.decompress(value))
    except (zlib.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable manifest: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a fileconsul manifest")
    return columns.decode(data, FILE_COLUMNS, FileInfo)
