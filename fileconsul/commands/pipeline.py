"""The one pipeline push, pull and status share: hold the local lock and put back an apply a
crash left unchecked; load the record; scan the local tree and read the remote one side by
side; see the three sides; plan, and refuse what the plan refuses. Each command is this, then
its own last step (commit, apply, or report).

A pull looks only at the paths it would change (`narrow`): what Consul changed since this
node's base, read, then those paths alone stated and hashed locally. A local edit elsewhere is
no business of a pull (it leaves it alone, and status and push scan the whole tree); an edit
of a path it changes is a conflict as ever. It scans the whole tree where nothing narrower is
sound: no record yet, an apply that may have left temporary files, the ignore rules changed
here, or a change of more paths than a scan costs."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from fileconsul.commands import trust
from fileconsul.commands.context import Context
from fileconsul.errors import ConflictError, FileconsulError, IntegrityError, InvalidInput
from fileconsul.local import record as records
from fileconsul.local import scan, transaction
from fileconsul.local.lock import local_lock
from fileconsul.local.record import Record
from fileconsul.model import plan as planner
from fileconsul.model.plan import Action, Plan, Side, Sides
from fileconsul.model.records import Head
from fileconsul.model.tree import RemoteTree
from fileconsul.store import read
from fileconsul.store.batching import submit

#: Bytes of file contents a push keeps from its scan instead of reading the files again.
KEEP_BYTES = 64 * 1024 * 1024
#: A pull that changes more paths than this scans the whole tree (its hash cache spares
#: reading the unchanged files) rather than read and hash each of them.
NARROW_MOST = 1000


@dataclass(frozen=True)
class View:
    """What a command plans on: this node's record and scan, the remote tree, the sides.
    `narrow`: the scan looked only at the paths the pull changes (the rest of `local` is the
    base), and the hash cache was not read."""

    record: Record
    local: scan.Scan
    tree: RemoteTree
    sides: Sides
    narrow: bool = False


@contextmanager
def changing(ctx: Context) -> Iterator[Record]:
    """Where a push or pull begins: the basepath's lock held (one fileconsul at a time), an
    apply a crash left unchecked put back, the record loaded (its hash cache when a scan of
    the whole tree needs it)."""
    with local_lock(ctx.basepath):
        if transaction.recover(ctx.basepath):
            ctx.notify(
                "put back an apply that was interrupted before its --check had passed (it is "
                "applied and checked again)"
            )
        yield records.load(ctx.basepath, ctx.prefix, cache=False)


@contextmanager
def applying(ctx: Context) -> Iterator[None]:
    """Around an apply's renames and its record: a mark that, should the process die in
    between, leaves temporary files to clean and a record behind the tree, so the next pull
    scans the whole tree. Not durable: a mark lost with a crash costs only leftovers that a
    later whole scan removes."""
    mark = _mark(ctx)
    mark.touch()
    yield
    mark.unlink(missing_ok=True)


def _mark(ctx: Context) -> Path:
    return records.internal_dir(ctx.basepath) / "applying"


def look(
    ctx: Context,
    record: Record,
    *,
    push: bool = False,
    others: bool = True,
    head: Head | None = None,
) -> View:
    """The local scan and the remote read, side by side (one mostly waits on the disk, the
    other on Consul), and the sides they make. A scan error comes first, as if the two ran
    one after the other. A push keeps the bytes the scan reads and reads the leader's view
    (never stale); `others` and `head` are as `store.read.read` takes them.

    The read runs here, the scan in a worker: the read may wait (for another push's lock, up
    to --lock-wait), and an interrupt stops it at once; the scan is bounded by the disk."""
    if not record.hash_cache:
        record.hash_cache = records.load_cache(ctx.basepath, ctx.prefix)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fileconsul-scan") as pool:
        scanning = submit(pool, scan.scan, ctx.basepath, record.hash_cache, KEEP_BYTES * push)
        try:
            if push and ctx.signer is not None:
                tree = trust.read_to_sign(ctx, record)
            else:
                tree = read.read(
                    ctx.client,
                    ctx.prefix,
                    known=record.remote,
                    lock_wait=ctx.lock_wait,
                    stale=ctx.stale and not push,
                    others=others,
                    head=head,
                    trust=None if push else ctx.trust,
                    held=record.revision,
                )
        except FileconsulError:
            scanning.result()  # its error, if it has one, is the one to report
            raise
        return view_of(record, scanning.result(), tree)


def look_narrow(
    ctx: Context,
    record: Record,
    *,
    others: bool = True,
    head: Head | None = None,
    also: frozenset[str] = frozenset(),
) -> View:
    """As `look` for a pull, scanning only the paths the pull may change (those where Consul
    differs from the base, and `also`), when that is sound; else the whole tree."""
    if not record.exists or _mark(ctx).exists():
        return look(ctx, record, others=others, head=head)
    tree = read.read(
        ctx.client,
        ctx.prefix,
        known=record.remote,
        lock_wait=ctx.lock_wait,
        stale=ctx.stale,
        others=others,
        head=head,
        trust=ctx.trust,
        held=record.revision,
    )
    paths = {p for p, _ in tree.files.items() ^ record.files.items()} | also
    if len(paths) > NARROW_MOST:
        return view_of(
            record, scan.scan(ctx.basepath, records.load_cache(ctx.basepath, ctx.prefix)), tree
        )
    found = scan.scan_paths(ctx.basepath, paths | {scan.IGNORE_FILE})
    if found.files.get(scan.IGNORE_FILE) != record.files.get(scan.IGNORE_FILE):
        # The rules changed here: which paths they cover is known from a whole scan alone.
        return view_of(
            record, scan.scan(ctx.basepath, records.load_cache(ctx.basepath, ctx.prefix)), tree
        )
    local = dict(record.files)
    for path in paths:
        local.pop(path, None)
    local.update((p, i) for p, i in found.files.items() if p in paths)
    narrow = replace(found, files=local)
    seen = planner.sides(local, found.ignored, record.files, record.exists, tree, checked=paths)
    return View(record, narrow, tree, seen, narrow=True)


def view_of(record: Record, local: scan.Scan, tree: RemoteTree) -> View:
    seen = planner.sides(local.files, local.ignored, record.files, record.exists, tree)
    return View(record, local, tree, seen)


def planned(
    view: View, side: Side, *, force: bool, max_delete: int | None, new_history: bool = False
) -> tuple[Plan, list[Action]]:
    """The plan and what it moves on `side`; IntegrityError on a tree that cannot be planned
    on (its head lost with its history left, unless a push starts a new history; its facts
    unknown), ConflictError on a conflict (unless `force`), InvalidInput past the cap."""
    broken = planner.unknown_tree(view.tree)
    if not (side == "push" and new_history):
        broken = broken or planner.lost_history(view.tree)
    if broken is not None:
        raise IntegrityError(broken)
    found = view.sides.planned()
    if found.conflicts and not force:
        raise ConflictError(planner.conflict_refusal(found, side))
    actions = found.actions(side, force=force)
    before = view.sides.changing(side)
    cap = planner.delete_cap(actions, before, side=side, max_delete=max_delete, force=force)
    if cap is not None:
        raise InvalidInput(cap.message)
    return found, actions


def advance(
    record: Record, planned: Plan, applied: list[Action], tree: RemoteTree, seen: Sides
) -> None:
    """Move the record to what is now the same on both sides, at the tree's revision."""
    record.advance([*planned.converged.items(), *((a.path, a.target) for a in applied)])
    for path in seen.newly_ignored:
        record.files.pop(path, None)
    record.revision = tree.revision
    record.remote = tree.known


def notes(view: View) -> list[str]:
    """What the operator should know of a view: skipped local entries, the tree's warnings and
    corrupt values, a push that never committed, a tree another tool deleted."""
    tree = view.tree
    found = [f"skipped {path}: {why}" for path, why in view.local.skipped]
    found += tree.warnings
    found += [f"{path}: {why}" for path, why in tree.corrupt]
    if tree.uncommitted:
        found.append(_uncommitted_note(tree))
    if view.sides.gone:
        found.append(
            f"the files under {tree.prefix}/ are gone (deleted by another tool, not by a push): "
            "nothing is deleted here; a push re-creates them from this node"
        )
    return found


def _uncommitted_note(tree: RemoteTree) -> str:
    count = len(tree.uncommitted)
    journal = tree.dead_push
    if journal is None:
        return (
            f"{count} values of a push that has not committed are ignored; the next push "
            "undoes them"
        )
    return (
        f"{count} values written by a push from {journal.node} ({journal.user}) at "
        f"{journal.time}, which never committed (revision {journal.revision}), are ignored "
        "here; until the next push undoes them, `consul kv get` and other raw readers see them"
    )
