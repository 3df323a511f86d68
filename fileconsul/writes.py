"""A key a commit writes, and what it costs in a transaction body."""

from __future__ import annotations

from typing import NamedTuple

from fileconsul.fileinfo import FileInfo

#: Room kept in each transaction body for its checks and the envelope.
ENVELOPE = 1024


def b64_len(size: int) -> int:
    """The length of `size` bytes in base64, as values travel in a transaction."""
    return 4 * ((size + 2) // 3)


def _json_len(text: str) -> int:
    """At most how long `text` is as a JSON string (a non-ASCII character can take 12 bytes)."""
    return len(text) + 3 if text.isascii() else 12 * len(text) + 3


# -- what a commit writes ---------------------------------------------------------------------


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


def cost(write: Write) -> int:
    return write.cost
