"""What status, push and pull share: the three sides a plan compares, the local scan and remote
read side by side, what a command did (Outcome), and `status` itself. `push` (push.py) and
`pull` (pull.py) are each a short composition of these, the planner, and the publish (remote)
or apply (local) step."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field

from fileconsul import (
    history,
    preflight,
    remote,
    scan,
    state,
    writer,
)
from fileconsul.errors import ConflictError, InvalidInput
from fileconsul.fileinfo import FileInfo, Files
from fileconsul.plan import Action, Plan, plan
from fileconsul.remote import RemoteTree
from fileconsul.run import Run

#: Bytes of file contents a push keeps from its scan instead of reading the files again.
KEEP_BYTES = 64 * 1024 * 1024


@dataclass
class Sides:
    """The three trees a plan compares, as this node sees them: its ignore rules hide paths
    from all three, and a tree another tool deleted whole counts as unchanged."""

    local: dict[str, FileInfo]
    base: dict[str, FileInfo]
    remote: dict[str, FileInfo]
    #: Tracked paths that this node's ignore rules now cover.
    newly_ignored: list[str]
    #: The files under the prefix were deleted by another tool (not by a commit).
    gone: bool


def sides(local: scan.Scan, record: state.Record, tree: RemoteTree) -> Sides:
    def seen(files: Files) -> dict[str, FileInfo]:
        return {p: i for p, i in files.items() if not local.ignored(p)}

    base = seen(record.files)
    gone = tree.wiped or (
        tree.head is None
        and not tree.legacy_index
        and not tree.files
        and not tree.unsafe
        and record.exists
        and bool(record.files)
    )
    newly_ignored = sorted(set(record.files) - set(base))
    return Sides(local.files, base, dict(base) if gone else seen(tree.files), newly_ignored, gone)


@dataclass
class Status:
    prefix: str
    plan: Plan
    remote: RemoteTree
    scan: scan.Scan
    record: state.Record
    sides: Sides
    #: What a push or pull would refuse, each said once.
    refusals: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return self.plan.in_sync and not self.sides.gone and not self.refusals

    @property
    def exit_code(self) -> int:
        """5 when a push or pull would refuse something, 4 on a conflict (a person must
        decide), 1 when there is something to push or pull, 0 in sync."""
        if self.refusals:
            return InvalidInput.exit_code
        if self.plan.conflicts:
            return ConflictError.exit_code
        return 0 if self.in_sync else 1

    @property
    def warnings(self) -> list[str]:
        unsafe = [f"skipped unsafe key {key!r}: {why}" for key, why in self.remote.unsafe]
        return notes(self.scan, self.remote, self.sides) + unsafe


@dataclass
class Outcome:
    """What a push or pull did (or, with dry_run, would do)."""

    actions: list[Action] = field(default_factory=list)
    #: The revision the tree is at afterwards (for a push: the one it committed, if any).
    revision: int = 0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    #: (path, reason) of paths left alone because they are unsafe; the command exits 5.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: After a push: remote changes this node has still to pull.
    left_to_pull: int = 0
    #: The head a push committed (None: it committed nothing).
    committed: history.Head | None = None
    #: (path, change) for the --exec hook: what this pull applied, and what an interrupted one
    #: applied before it and no hook was handed.
    for_hooks: list[tuple[str, str]] = field(default_factory=list)
    #: The revision this node was at before.
    previous_revision: int = 0
    #: The index the head was read at (0: the tree has no head).
    head_index: int = 0
    #: Why the revision was not applied here (halted, rejected before), when it was not.
    held: str | None = None

    @property
    def exit_code(self) -> int:
        return InvalidInput.exit_code if self.skipped else 0


def notes(local: scan.Scan, tree: RemoteTree, seen: Sides) -> list[str]:
    notes = [f"skipped {path}: {why}" for path, why in local.skipped]
    notes += tree.warnings
    notes += [f"{path}: {why}" for path, why in tree.corrupt]
    if tree.uncommitted:
        notes.append(_uncommitted_note(tree))
    if seen.gone:
        notes.append(
            f"the files under {tree.prefix}/ are gone (deleted by another tool, not by a push): "
            "nothing is deleted here; a push re-creates them from this node"
        )
    return notes


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


def status(run: Run) -> Status:
    root = run.settings.basepath
    record = state.load(root, run.prefix)
    local, tree = scan_and_read(run, record)
    if record.exists and local.hash_cache != record.hash_cache:
        # Like `git status` refreshing its index: only the hash cache moves, never the base.
        with suppress(ConflictError), state.local_lock(root, wait=0):
            record.hash_cache = local.hash_cache
            state.save_cache(root, record)
    seen = sides(local, record, tree)
    planned = plan(seen.local, seen.base, seen.remote)
    result = Status(run.prefix, planned, tree, local, record, seen)
    result.refusals = preflight.refusals(run, result.scan, result.remote, planned, seen)
    return result


def scan_and_read(
    run: Run,
    record: state.Record,
    *,
    push: bool = False,
    others: bool = True,
    head: history.Head | None = None,
) -> tuple[scan.Scan, RemoteTree]:
    """The local scan and the remote read, side by side: one mostly waits on the disk, the
    other on Consul. A scan error comes first, as if the two ran one after the other.

    A push keeps the bytes the scan reads and reads the leader's view (never stale)."""

    def read() -> RemoteTree:
        return remote.read(
            run.client,
            run.prefix,
            known=record.remote,
            known_revision=record.revision,
            lock_wait=run.lock_wait,
            stale=run.stale and not push,
            others=others,
            head=head,
        )

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fileconsul-read") as pool:
        future = pool.submit(read)
        local = scan.scan(run.settings.basepath, record.hash_cache, keep_bytes=KEEP_BYTES * push)
        return local, future.result()


def refuse_conflicts(planned: Plan, command: str, force: bool) -> None:
    if planned.conflicts and not force:
        paths = ", ".join(c.path for c in planned.conflicts[:5])
        more = f" and {len(planned.conflicts) - 5} more" if len(planned.conflicts) > 5 else ""
        winner = "local" if command == "push" else "remote"
        raise ConflictError(
            f"{command} refused: {paths}{more} changed on both sides; nothing was changed "
            f"(see them with `fileconsul diff`; resolve them, or run {command} --force to "
            f"keep the {winner} version)"
        )


def synced(
    record: state.Record, planned: Plan, applied: list[Action], tree: RemoteTree, seen: Sides
) -> None:
    """Move the record to what is now the same on both sides, at the tree's revision."""
    record.advance([*planned.converged.items(), *((a.path, a.target) for a in applied)])
    for path in seen.newly_ignored:
        record.files.pop(path, None)
    record.revision = tree.revision
    record.remote = tree.remote_state


def recover(run: Run) -> None:
    """Put back an apply a crash left unchecked, before anything reads the tree."""
    if writer.recover(run.settings.basepath):
        run.notify(
            "put back an apply that was interrupted before its --check had passed (it is "
            "applied and checked again)"
        )
