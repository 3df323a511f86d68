"""Which relative paths are safe to be both a Consul key suffix and a file under the basepath.

Every key read from Consul passes through `unsafe_reason` before it reaches a URL or the disk:
httpx drops `.` and `..` segments from URL paths, and a key like `a/../../etc/x` must never be
turned into a file name.
"""

from __future__ import annotations

import re

INTERNAL_DIR = ".fileconsul"
MANIFEST_PATH = f"{INTERNAL_DIR}/manifest"
#: Names starting with this are a pull's temporary files and directories; never synced.
TMP_PREFIX = ".fileconsul-tmp-"
#: A name ending in this holds a tree's history, lock and reports: never a file.
META_SUFFIX = ".fileconsul"
MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 4096


#: Names made only of these, with no empty, '.' or '..' segment, are safe: checked first,
#: as nearly every name is.
_SEGMENT = r"[A-Za-z0-9_+=,@~-][A-Za-z0-9_.+=,@~-]{0,254}"
_PLAIN = re.compile(f"{_SEGMENT}(/{_SEGMENT})*")


def unsafe_reason(path: str) -> str | None:
    """Why `path` cannot be synced as a file, or None when it is safe."""
    if len(path) <= MAX_PATH_BYTES and _PLAIN.fullmatch(path) and META_SUFFIX not in path:
        return None
    return url_unsafe_reason(path) or _reserved_reason(path)


def url_unsafe_reason(key: str) -> str | None:
    """Why `key` cannot go in a URL as it is (httpx or Consul would rewrite it), or None."""
    if len(key) <= MAX_PATH_BYTES and _PLAIN.fullmatch(key):
        return None
    return _whole_name_reason(key) or _segment_reason(key)


def _reserved_reason(path: str) -> str | None:
    for segment in path.split("/"):
        if segment.startswith(TMP_PREFIX):
            return f"names starting with {TMP_PREFIX!r} are fileconsul's temporary files"
        if segment.endswith(META_SUFFIX):
            return f"names ending in {META_SUFFIX!r} hold another fileconsul tree's history"
    return None


def _whole_name_reason(path: str) -> str | None:
    if not path:
        return "empty name"
    if path.startswith("/"):
        return "leading '/'"
    if path.endswith("/"):
        return "folder key (ends in '/')"
    if "\\" in path:
        return "backslash in name"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "control character in name"
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"name longer than {MAX_PATH_BYTES} bytes"
    return None


def _segment_reason(path: str) -> str | None:
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            return f"'{segment or '//'}' segment"
        if len(segment.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            return f"segment longer than {MAX_SEGMENT_BYTES} bytes"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    return None


def is_internal(path: str) -> bool:
    """Paths under `.fileconsul/` belong to fileconsul itself and are never synced as files."""
    return path == INTERNAL_DIR or path.startswith(INTERNAL_DIR + "/")


def normalize_prefix(prefix: str) -> str:
    """The prefix without a trailing slash; raises ValueError when it is not a safe key."""
    cleaned = prefix.rstrip("/")
    reason = unsafe_reason(cleaned)
    if reason is not None:
        raise ValueError(f"invalid prefix {prefix!r}: {reason}")
    return cleaned
