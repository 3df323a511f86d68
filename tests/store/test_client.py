"""The Consul client's transaction bodies: what is sent is what Consul stores."""

from __future__ import annotations

import json
import os
from typing import Any

from fileconsul.config import ConsulSettings
from fileconsul.store.client import ConsulClient
from fileconsul.store.ops import (
    encode_txn,
    kv_cas,
    kv_check_index,
    kv_check_not_exists,
    kv_delete,
    kv_get,
    kv_set,
)
from tests.conftest import KV

ODD_KEYS = [
    "plain",
    'quote"d',
    "back\\slash",
    "tab\there",
    "caf\u00e9/\u65e5\u672c",
    "line\u2028sep",
]


def test_a_transaction_body_is_the_json_of_its_operations() -> None:
    ops = [kv_check_index("m\u00e9", 5), kv_check_not_exists("lock"), kv_delete("gone")]
    ops += [kv_set(key, os.urandom(i * 37), i) for i, key in enumerate(ODD_KEYS)]
    ops += [kv_cas("manifest", b"", 0, 7), kv_get("x")]
    assert json.loads(encode_txn(ops)) == ops
    assert encode_txn([]) == b"[]"


def test_values_and_keys_sent_in_a_transaction_are_stored_as_they_are(
    agent: Any, kv: KV, prefix: str
) -> None:
    values = {f"{prefix}/{key}": os.urandom(100 + i) for i, key in enumerate(ODD_KEYS)}
    values[f"{prefix}/empty"] = b""
    with ConsulClient(ConsulSettings(base_url=agent.url)) as client:
        client.txn([kv_set(key, value, 42) for key, value in values.items()])
        entries = client.txn_entries([kv_get(key) for key in values])
    assert {e.key: e.value for e in entries} == values
    assert {e.flags for e in entries} == {42}
    assert kv.tree(prefix).keys() == values.keys()
