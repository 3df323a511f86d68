"""Consul's transaction operations (`PUT /v1/txn`): each verb as a small builder, and the
JSON body of a transaction, encoded fast."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pybase64

#: Consul 1.8 accepts at most 64 operations per transaction (128 since 1.14).
TXN_MAX_OPS = 64
#: Consul's txn_max_req_len is 512 KiB for the whole JSON body; keep a margin for the envelope.
TXN_MAX_BODY = 512 * 1024 - 8 * 1024

Op = dict[str, Any]


def kv_set(key: str, value: bytes, flags: int) -> Op:
    return {"KV": {"Verb": "set", "Key": key, "Value": _b64(value), "Flags": flags}}


def kv_cas(key: str, value: bytes, flags: int, index: int) -> Op:
    return {"KV": {"Verb": "cas", "Key": key, "Value": _b64(value), "Flags": flags, "Index": index}}


def kv_delete(key: str) -> Op:
    return {"KV": {"Verb": "delete", "Key": key}}


def kv_delete_cas(key: str, index: int) -> Op:
    return {"KV": {"Verb": "delete-cas", "Key": key, "Index": index}}


def kv_delete_tree(prefix: str) -> Op:
    """Every key that starts with `prefix`, as a string: end it with '/' to mean a folder."""
    return {"KV": {"Verb": "delete-tree", "Key": prefix}}


def kv_check_not_exists(key: str) -> Op:
    return {"KV": {"Verb": "check-not-exists", "Key": key}}


def kv_check_index(key: str, index: int) -> Op:
    return {"KV": {"Verb": "check-index", "Key": key, "Index": index}}


def kv_get(key: str) -> Op:
    return {"KV": {"Verb": "get", "Key": key}}


def kv_get_tree(prefix: str) -> Op:
    return {"KV": {"Verb": "get-tree", "Key": prefix}}


def encode_txn(ops: Sequence[Op]) -> bytes:
    """A transaction's JSON body."""
    if len(ops) > TXN_MAX_OPS:
        raise ValueError(f"a transaction holds at most {TXN_MAX_OPS} operations")
    return ("[" + ",".join(map(_encode_op, ops)) + "]").encode()


_json = json.JSONEncoder(separators=(",", ":")).encode


def _encode_op(op: Op) -> str:
    """One operation as JSON. A value is base64, which JSON never escapes: it is spliced in
    as it is rather than scanned by the encoder (that scan took most of a push's encoding)."""
    kv = op.get("KV")
    value = kv.get("Value") if kv else None
    if kv is None or not isinstance(value, str):
        return _json(op)
    fields = _json({k: v for k, v in kv.items() if k != "Value"})
    return f'{{"KV":{fields[:-1]},"Value":"{value}"}}}}'


def _b64(value: bytes) -> str:
    return pybase64.b64encode_as_string(value)
