"""Rolling a revision out across a fleet: at most N nodes apply at once, and a revision a node
rejects stops there.

Slots follow Consul's semaphore recipe (`api/semaphore.go`): each contender holds a key
`<prefix>.fileconsul/slots/<session>` with a session of its own, and one check-and-set key,
`<prefix>.fileconsul/slots/holders`, lists the sessions holding a slot. A holder whose session
is gone (its node died, its TTL ran out) no longer counts. A halt is
`<prefix>.fileconsul/halt`: the revision, the node, the time and why; a newer revision lifts it,
and so does `fileconsul resume`, which deletes it. A watcher held back by a halt blocks on the
head and the halt together, so that either lifting wakes it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from typing import Any

from fileconsul.errors import ConflictError, FileconsulError, InvalidInput, PermissionDenied
from fileconsul.model.tree import KVEntry, parse_head
from fileconsul.store.client import ConsulClient, TxnFailed
from fileconsul.store.layout import (
    halt_key,
    head_and_halt_prefix,
    head_key,
    holders_key,
    slots_prefix,
)
from fileconsul.store.ops import kv_delete_cas
from fileconsul.store.read import read_head

#: Seconds of a slot session's TTL (Consul's least); renewed at a third of it while held.
SLOT_TTL = 10
#: Longest blocking query while waiting for a slot.
_WAIT = 60.0


@contextmanager
def slot(client: ConsulClient, prefix: str, limit: int, node: str) -> Iterator[None]:
    """Hold one of `limit` slots, fleet-wide, for the block; wait for one first. A session of
    its own keeps it, renewed meanwhile; when this process dies, Consul frees it."""
    session = client.session_create(f"fileconsul slot {prefix} {node}", ttl=SLOT_TTL)
    renewing = threading.Event()
    renewer = threading.Thread(
        target=_renew, args=(client, session, renewing), name="fileconsul-slot", daemon=True
    )
    try:
        contender = slots_prefix(prefix) + session
        if not client.put(contender, node.encode(), acquire=session):
            raise FileconsulError(f"cannot take a slot under {slots_prefix(prefix)}")
        renewer.start()
        _acquire(client, prefix, limit, session)
        try:
            yield
        finally:
            _release(client, prefix, session)
    finally:
        renewing.set()
        if renewer.is_alive():
            renewer.join()
        with suppress(FileconsulError):
            client.session_destroy(session)


def _renew(client: ConsulClient, session: str, stop: threading.Event) -> None:
    while not stop.wait(SLOT_TTL / 3):
        with suppress(FileconsulError):
            client.session_renew(session)


def _acquire(client: ConsulClient, prefix: str, limit: int, session: str) -> None:
    index = None
    while True:
        entries, index = client.recurse(slots_prefix(prefix), index=index, wait=_WAIT)
        lock = _holders(entries, prefix)
        alive = {e.session for e in entries if e.session}
        holders = {h for h in lock["Holders"] if h in alive}
        if len(holders) < limit:
            holders.add(session)
            value = json.dumps({"Limit": limit, "Holders": dict.fromkeys(holders, True)})
            if client.put(holders_key(prefix), value.encode(), cas=lock["index"]):
                return


def _holders(entries: list[KVEntry], prefix: str) -> dict[str, Any]:
    for entry in entries:
        if entry.key == holders_key(prefix):
            try:
                data = json.loads(entry.value)
                holders = dict(data.get("Holders") or {})
                return {"Holders": holders, "Limit": data.get("Limit"), "index": entry.modify_index}
            except (ValueError, AttributeError, TypeError):
                break
    return {"Holders": {}, "Limit": None, "index": 0}


def _release(client: ConsulClient, prefix: str, session: str) -> None:
    with suppress(FileconsulError):
        for _ in range(10):  # another holder's check-and-set may win a round
            entry, _ = client.get(holders_key(prefix))
            if entry is None:
                break
            lock = _holders([entry], prefix)
            if session not in lock["Holders"]:
                break
            del lock["Holders"][session]
            value = json.dumps({"Limit": lock["Limit"], "Holders": lock["Holders"]})
            if client.put(holders_key(prefix), value.encode(), cas=lock["index"]):
                break
        client.delete(slots_prefix(prefix) + session)


@dataclass(frozen=True)
class Halt:
    revision: int
    node: str
    time: float
    reason: str


def halt(client: ConsulClient, prefix: str, stop: Halt) -> None:
    """Stop the rollout of `stop.revision`: no watcher applies it."""
    client.put(halt_key(prefix), json.dumps(asdict(stop)).encode())


def halted(client: ConsulClient, prefix: str, revision: int) -> Halt | None:
    """The halt of `revision`, if it is halted (a halt of an older revision is lifted)."""
    entry, _ = client.get(halt_key(prefix))
    found = read_halt(entry)
    return found if found is not None and found.revision == revision else None


def read_halt(entry: KVEntry | None) -> Halt | None:
    if entry is None:
        return None
    try:
        data = json.loads(entry.value)
        return Halt(
            int(data["revision"]), str(data["node"]), float(data["time"]), str(data["reason"])
        )
    except (ValueError, KeyError, TypeError):
        return None


def halt_head(client: ConsulClient, prefix: str, node: str, reason: str, at: float) -> Halt | None:
    """Halt the rollout of the head revision, as `node` at time `at`: the new halt, or None
    when that revision is halted already (the halt stays as it was). Check-and-set: a halt
    written meanwhile is never overwritten."""
    head = read_head(client, prefix)
    if head is None:
        raise InvalidInput(f"{prefix} has no revision yet: there is no rollout to halt")
    entry, _ = client.get(halt_key(prefix))
    found = read_halt(entry)
    if found is not None and found.revision == head.revision:
        return None
    stop = Halt(head.revision, node, at, reason)
    cas = entry.modify_index if entry is not None else 0
    if not client.put(halt_key(prefix), json.dumps(asdict(stop)).encode(), cas=cas):
        raise ConflictError("the halt changed while it was being written; nothing was changed")
    return stop


@dataclass(frozen=True)
class Lifted:
    """What `resume` lifted: the halt (None: its key did not parse), and whether it still held
    the head back (a halt of an older revision was lifted already by a newer one)."""

    halt: Halt | None
    holding: bool


def resume(client: ConsulClient, prefix: str) -> Lifted | None:
    """Lift the halt by deleting its key (check-and-set: a halt written meanwhile stays); what
    was lifted, or None when nothing was halted."""
    entry, _ = client.get(halt_key(prefix))
    if entry is None:
        return None
    try:
        client.txn([kv_delete_cas(halt_key(prefix), entry.modify_index)])
    except TxnFailed as exc:
        raise ConflictError(
            "the halt changed while it was being lifted (another node halted again); nothing "
            "was changed: look at `fileconsul status --fleet` and run resume again"
        ) from exc
    found = read_halt(entry)
    head = read_head(client, prefix)
    holding = found is not None and head is not None and found.revision == head.revision
    return Lifted(found, holding)


def can_halt(client: ConsulClient, prefix: str) -> bool:
    """Whether the token may write the halt key, asked without writing it: a check-and-set
    at an index no key has fails after the ACL check, which refuses first (403)."""
    try:
        client.put(halt_key(prefix), b"", cas=2**63 - 1)
    except PermissionDenied:
        return False
    return True


def still_halted(client: ConsulClient, prefix: str, held: Halt, *, stale: bool) -> int | None:
    """The index to block from while held back by `held`, on the head and the halt together;
    None when it was lifted already (deleted, replaced, or a commit moved the head past it
    since the delivery: its index is already in this one, so a query from it would miss it)."""
    entries, index = client.recurse(head_and_halt_prefix(prefix), stale=stale)
    found = next((read_halt(e) for e in entries if e.key == halt_key(prefix)), None)
    head = next((e for e in entries if e.key == head_key(prefix)), None)
    try:
        moved = head is not None and parse_head(head).revision != held.revision
    except FileconsulError:
        moved = True  # a head that does not parse is the delivery's to report
    return index if found == held and not moved else None


def wait_on_halt(client: ConsulClient, prefix: str, index: int, wait: float, *, stale: bool) -> int:
    """Block until the head or the halt moves (a commit, a resume, a new halt); the new index."""
    _, new_index = client.recurse(head_and_halt_prefix(prefix), index=index, wait=wait, stale=stale)
    return new_index
