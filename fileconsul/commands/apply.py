"""Applying a pull's plan to the local tree: each value read from Consul (a few transactions
in flight), verified against its hash, staged beside its place, and all of them renamed in
together, or none."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

from fileconsul.commands import trust
from fileconsul.commands.context import Context
from fileconsul.errors import ConflictError, IntegrityError
from fileconsul.local import transaction
from fileconsul.model.facts import content_hash
from fileconsul.model.plan import Action
from fileconsul.model.tree import RemoteTree
from fileconsul.store.batching import batches, in_flight
from fileconsul.store.client import TxnFailed
from fileconsul.store.commit import Step
from fileconsul.store.layout import content_key
from fileconsul.store.ops import TXN_MAX_OPS, kv_get

#: Bytes of values read per transaction.
FETCH_BATCH_BYTES = 4 * 1024 * 1024
#: Transactions a pull keeps in flight at once.
IN_FLIGHT = 4
#: Reads of a value that does not match its hash before the pull gives up (a reader may see a
#: key a moment before the commit that lists its new hash).
_VERIFY_TRIES = 3
#: Up to this many values are read one by one, raw, rather than in a transaction: a change of
#: a few files (what a fleet applies on most pushes) then costs the servers no JSON and no
#: base64 around them.
_RAW_UP_TO = 2


@dataclass(frozen=True)
class Staged:
    """A pull's files, staged and verified in `txn`, whose commit renames them in with the
    deletes."""

    txn: transaction.Transaction
    #: What will be applied, sorted; and (path, reason) of each path skipped because a link
    #: or a non-file stands in its way.
    applied: list[Action]
    skipped: list[tuple[str, str]]


@contextmanager
def staged(
    ctx: Context,
    tree: RemoteTree,
    actions: list[Action],
    leftovers: list[str],
    step: Step,
    *,
    keep: bool = False,
) -> Iterator[Staged]:
    """Stage `actions` as one transaction on the local tree; whatever is not committed when
    the block ends is discarded. With `keep`, a commit is put back unless it is finished."""
    applied: list[Action] = []
    skipped: list[tuple[str, str]] = []
    with transaction.transaction(ctx.basepath, keep=keep) as txn:
        # Under the local lock no other fileconsul writes here: these are a killed pull's.
        for rel in leftovers:
            txn.remove_leftover(rel)
        # The deletes first: a file one deletes may give its place to a new directory, and a
        # directory they empty to a file.
        for action in actions:
            if action.target is None:
                txn.delete(action.path)
                applied.append(action)
        writes = [a for a in actions if a.target is not None]
        with closing(_staged(ctx, tree, txn, writes)) as staging:
            for action, reason in staging:
                if reason is None:
                    applied.append(action)
                    step(1)
                else:
                    skipped.append((action.path, reason))
        yield Staged(txn, sorted(applied), skipped)


def _staged(
    ctx: Context, tree: RemoteTree, txn: transaction.Transaction, actions: list[Action]
) -> Generator[tuple[Action, str | None]]:
    """Stage each action's value, with the reason when its path was skipped. Each batch read
    is written to disk by the thread that read it."""

    def stage_batch(batch: list[Action]) -> list[tuple[Action, str | None]]:
        known = [(a, tree.values[a.path]) for a in batch if a.path in tree.values]
        fetched = _fetch(ctx, tree, [a for a in batch if a.path not in tree.values])
        for action, data in known + fetched:
            trust.check_value(tree, action.path, data)
        return [(action, _stage(txn, action, data)) for action, data in known + fetched]

    packed = batches(actions, _size, count=TXN_MAX_OPS, total=FETCH_BATCH_BYTES)
    with closing(in_flight(stage_batch, packed, depth=IN_FLIGHT, name="fileconsul-pull")) as done:
        for results in done:
            yield from results


def _size(action: Action) -> int:
    return action.target.size if action.target else 0


def _stage(txn: transaction.Transaction, action: Action, data: bytes) -> str | None:
    assert action.target is not None
    try:
        txn.stage(action.path, data, action.target.mode)
    except transaction.UnsafeLocalPath as exc:
        return str(exc)
    return None


def _values(ctx: Context, keys: list[str]) -> dict[str, bytes]:
    if len(keys) <= _RAW_UP_TO:
        found = {key: ctx.client.raw(key, stale=ctx.stale) for key in keys}
        return {key: value for key, value in found.items() if value is not None}
    try:
        return ctx.client.txn_values([kv_get(key) for key in keys], stale=ctx.stale)
    except TxnFailed as exc:
        raise ConflictError(
            "the remote tree changed during the pull; nothing was changed (run pull again)"
        ) from exc


def _fetch(ctx: Context, tree: RemoteTree, batch: list[Action]) -> list[tuple[Action, bytes]]:
    """The values of `batch`, each verified against the hash the plan expects (read where
    the history keeps it, when its key holds a value of a push that did not commit)."""
    if not batch:
        return []
    keys = [content_key(tree, a.path) for a in batch]
    for attempt in range(_VERIFY_TRIES):
        values = _values(ctx, keys)
        bad = [
            a
            for a, key in zip(batch, keys, strict=True)
            if a.target is not None and content_hash(values.get(key, b"")) != a.target.hash
        ]
        if not bad:
            return [(a, values[key]) for a, key in zip(batch, keys, strict=True)]
        if attempt < _VERIFY_TRIES - 1:
            time.sleep(0.2 * (attempt + 1))
    raise IntegrityError(
        f"the value of {bad[0].path} never matched its hash ({len(bad)} such files); nothing "
        "was changed (push it again from a node that has the right content)"
    )
