"""`fileconsul pull` as a `consul watch` handler: the JSON consul watch writes on stdin."""

from __future__ import annotations

import json

from fileconsul.consul import KVEntry
from fileconsul.errors import InvalidInput


def parse_payload(text: str, prefix: str) -> list[KVEntry] | None:
    """The tree from a `consul watch -type keyprefix` payload; None when Consul must be read
    (a `-type key` payload, or `null`: an empty prefix or a missing key)."""
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(
            f"the consul watch payload on stdin is not JSON ({exc}); run fileconsul from "
            "`consul watch -type keyprefix` or `-type key`"
        ) from exc
    if data is None or (isinstance(data, dict) and "Key" in data):
        return None
    if not isinstance(data, list) or not all(isinstance(e, dict) and "Key" in e for e in data):
        raise InvalidInput(
            "the consul watch payload on stdin is neither a key nor a key prefix result; "
            "use `consul watch -type keyprefix` or `-type key`"
        )
    outside = [e["Key"] for e in data if not str(e["Key"]).startswith(prefix + "/")]
    if outside:
        raise InvalidInput(
            f"the consul watch payload holds {outside[0]!r}, outside {prefix + '/'}: watch "
            f"`-prefix {prefix}/` or pass the matching --prefix"
        )
    try:
        return [KVEntry.from_json(e) for e in data]
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidInput(f"the consul watch payload has a malformed entry ({exc})") from exc
