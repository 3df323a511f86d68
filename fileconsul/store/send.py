"""Sending writes: transactions that each carry the same checks, a few in flight (they touch
disjoint keys), and each value too large to share a transaction as a PUT of its own (always
with a Content-Length). What a commit sends, and what undoing a push that died sends back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import closing

from fileconsul.model.facts import hash_to_flags
from fileconsul.store.batching import batches, in_flight
from fileconsul.store.client import ConsulClient
from fileconsul.store.ops import TXN_MAX_BODY, TXN_MAX_OPS, Op, encode_txn, kv_delete, kv_set
from fileconsul.store.prepare import ENVELOPE, Write, cost

#: Transactions kept in flight at once.
IN_FLIGHT = 4
#: A value whose operation takes more than this goes alone (a PUT), not in a transaction.
LARGE = TXN_MAX_BODY // 2

#: The bytes of a write (its value, or a local file read as it is sent).
Content = Callable[[Write], bytes]


def value_of(write: Write) -> bytes:
    assert write.value is not None
    return write.value


def send(
    client: ConsulClient,
    writes: Sequence[Write],
    checks: list[Op],
    content: Content = value_of,
    *,
    step: Callable[[int], None] = lambda count: None,
    renew: Callable[[], None] = lambda: None,
) -> None:
    """Send `writes`: the small ones in transactions that each carry `checks`, the large ones
    as PUTs of their own (which carry no check: only a writer holding the push lock sends
    them). `step` hears how many file writes went; `renew` keeps the lock's session alive."""
    small = [w for w in writes if w.cost <= LARGE]
    room = TXN_MAX_OPS - len(checks)
    packed = batches(small, cost, count=room, total=TXN_MAX_BODY - 2 * ENVELOPE)

    def sent(batch: list[Write]) -> int:
        client.txn(encode_txn([*checks, *(op_of(w, content) for w in batch)]))
        return sum(1 for w in batch if w.path)

    with closing(in_flight(sent, packed, depth=IN_FLIGHT, name="fileconsul-send")) as done:
        for count in done:
            renew()
            step(count)
    for write in writes:
        if write.cost > LARGE:
            renew()
            flags = hash_to_flags(write.target.hash) if write.target else 0
            client.put(write.key, content(write), flags=flags)
            step(1 if write.path else 0)


def op_of(write: Write, content: Content = value_of) -> Op:
    """The operation of one write: a delete (no target, no value), else a set whose Flags
    hold the target's hash."""
    if write.target is None and write.value is None:
        return kv_delete(write.key)
    flags = hash_to_flags(write.target.hash) if write.target is not None else 0
    return kv_set(write.key, content(write), flags)
