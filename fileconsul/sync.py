"""status, push and pull: each a short composition of the local scan, the remote read, the
planner, and the apply (local) or publish (remote) step."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field

from fileconsul import apply, publish, remote, scan, state
from fileconsul.consul import KVEntry
from fileconsul.errors import ConflictError, InvalidInput
from fileconsul.plan import Action, Plan, check_deletes, plan
from fileconsul.remote import RemoteTree
from fileconsul.run import Run

#: Bytes of file contents a push keeps from its scan instead of reading the files again.
KEEP_BYTES = 64 * 1024 * 1024


@dataclass
class Status:
    prefix: str
    plan: Plan
    remote: RemoteTree
    scan: scan.Scan
    record: state.Record

    @property
    def in_sync(self) -> bool:
        return self.plan.in_sync

    @property
    def warnings(self) -> list[str]:
        unsafe = [f"skipped unsafe key {key!r}: {why}" for key, why in self.remote.unsafe]
        return _warnings(self.scan, self.remote) + unsafe


@dataclass
class Outcome:
    """What a push or pull did (or, with dry_run, would do)."""

    actions: list[Action] = field(default_factory=list)
    revision: int = 0
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    #: (path, reason) of paths left alone because they are unsafe; the command exits 5.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: After a push: remote changes this node has still to pull.
    left_to_pull: int = 0

    @property
    def exit_code(self) -> int:
        return InvalidInput.exit_code if self.skipped else 0


def _warnings(local: scan.Scan, tree: RemoteTree) -> list[str]:
    notes = [f"skipped {path}: {why}" for path, why in local.skipped]
    notes += tree.warnings
    notes += [f"{path}: {why}" for path, why in tree.corrupt]
    if tree.uncommitted:
        notes.append(
            f"{len(tree.uncommitted)} values of an interrupted push are ignored until a push "
            "commits (re-run that push)"
        )
    return notes


def status(run: Run) -> Status:
    root = run.settings.basepath
    record = state.load(root, run.prefix)
    local, tree = _scan_and_read(run, record)
    if record.exists and local.hash_cache != record.hash_cache:
        # Like `git status` refreshing its index: only the hash cache moves, never the base.
        with suppress(ConflictError), state.local_lock(root, wait=0):
            record.hash_cache = local.hash_cache
            state.save_cache(root, record)
    return Status(run.prefix, plan(local.files, record.files, tree.files), tree, local, record)


def _scan_and_read(
    run: Run, record: state.Record, *, push: bool = False
) -> tuple[scan.Scan, RemoteTree]:
    """The local scan and the remote read, side by side: one mostly waits on the disk, the
    other on Consul. A scan error comes first, as if the two ran one after the other.

    A push keeps the bytes the scan reads, reads the leader's view (never stale), and asks the
    agent's value limit now, so that it is cached when the push needs it."""

    def read() -> RemoteTree:
        stale = run.stale and not push
        tree = remote.read(run.client, run.prefix, lock_wait=run.lock_wait, stale=stale)
        if push:
            run.client.max_value_size()
        return tree

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fileconsul-read") as pool:
        future = pool.submit(read)
        local = scan.scan(run.settings.basepath, record.hash_cache, keep_bytes=KEEP_BYTES * push)
        return local, future.result()


def _refuse_conflicts(p: Plan, command: str, force: bool) -> None:
    if p.conflicts and not force:
        paths = ", ".join(c.path for c in p.conflicts[:5])
        more = f" and {len(p.conflicts) - 5} more" if len(p.conflicts) > 5 else ""
        winner = "local" if command == "push" else "remote"
        raise ConflictError(
            f"{command} refused: {paths}{more} changed on both sides; nothing was changed "
            f"(resolve it, or run {command} --force to keep the {winner} version)"
        )


def _advance(record: state.Record, p: Plan, applied: list[Action], revision: int) -> None:
    """Move the record to what is now the same on both sides."""
    record.advance(
        [*p.converged.items(), *((a.path, a.target) for a in applied)], revision=revision
    )


# -- push -------------------------------------------------------------------------------------


def push(
    run: Run, *, force: bool = False, dry_run: bool = False, max_delete: int | None = None
) -> Outcome:
    root = run.settings.basepath
    with state.local_lock(root):
        record = state.load(root, run.prefix)
        local, tree = _scan_and_read(run, record, push=True)
        if local.unsafe:
            path, why = local.unsafe[0]
            raise InvalidInput(
                f"push refused: {path!r} cannot be a Consul key ({why}); nothing was pushed "
                f"(rename it or add it to {scan.IGNORE_FILE})"
            )

        def plan_on(tree: RemoteTree) -> _Planned:
            return _plan_push(local, record, tree, force, max_delete)

        planned = plan_on(tree)
        if dry_run:
            return Outcome(planned.actions, tree.committed_index, True, _warnings(local, tree))
        revision = tree.committed_index
        if publish.needs_write(tree, planned.actions):
            limit = run.client.max_value_size()
            _refuse_too_large(planned.actions, limit)
            prepared = publish.prepare(run.prefix, tree, planned.actions, limit, local.contents)
            committed = publish.write_unlocked(run, prepared) if prepared.single else None
            if committed is None:
                planned, committed = _push_locked(run, planned, prepared, plan_on)
            revision = committed
        p, actions = planned.plan, planned.actions
        _advance(record, p, actions, revision)
        record.hash_cache = local.hash_cache
        state.save(root, record)
        outcome = Outcome(actions, revision, False, _warnings(local, planned.tree))
        outcome.left_to_pull = len(p.pull) + (0 if force else len(p.conflicts))
        return outcome


@dataclass
class _Planned:
    """A push's plan, the actions it sends and the remote tree it was made on."""

    plan: Plan
    actions: list[Action]
    tree: RemoteTree


def _plan_push(
    local: scan.Scan, record: state.Record, tree: RemoteTree, force: bool, max_delete: int | None
) -> _Planned:
    p = plan(local.files, record.files, tree.files)
    _refuse_conflicts(p, "push", force)
    actions = p.pushes(force=force)
    check_deletes(actions, len(tree.files), max_delete=max_delete, force=force, side="in Consul")
    return _Planned(p, actions, tree)


def _push_locked(
    run: Run,
    planned: _Planned,
    prepared: publish.Prepared,
    plan_on: Callable[[RemoteTree], _Planned],
) -> tuple[_Planned, int]:
    """Take the lock, plan again when another push committed meanwhile, and write; what was
    written and the revision it committed."""
    with publish.push_lock(run) as lease:
        if not remote.unchanged_since(run.client, planned.tree):
            fresh = remote.read(
                run.client, run.prefix, lock_wait=run.lock_wait, session=lease.session
            )
            if fresh.plans_like(planned.tree):
                planned.tree = prepared.tree = fresh
            else:
                planned = plan_on(fresh)
                prepared = publish.prepare(
                    run.prefix, fresh, planned.actions, prepared.limit, prepared.contents
                )
        if not publish.needs_write(planned.tree, planned.actions):
            return planned, planned.tree.committed_index
        with run.progress("pushing", len(prepared.writes)) as step:
            return planned, publish.write_locked(run, lease, prepared, step)


def _refuse_too_large(actions: list[Action], limit: int) -> None:
    for action in actions:
        if action.target is not None and action.target.size > limit:
            raise InvalidInput(
                f"{action.path} is {action.target.size} bytes, over Consul's {limit}-byte "
                f"value limit; nothing was pushed (add it to {scan.IGNORE_FILE} or shrink it)"
            )


# -- pull -------------------------------------------------------------------------------------


def pull(
    run: Run,
    *,
    force: bool = False,
    dry_run: bool = False,
    max_delete: int | None = None,
    entries: list[KVEntry] | None = None,
) -> Outcome:
    """Apply remote changes. `entries`, when given, is the whole tree already read (a
    consul-watch payload) and Consul is not asked again."""
    root = run.settings.basepath
    with state.local_lock(root):
        record = state.load(root, run.prefix)
        if entries is not None:
            local = scan.scan(root, record.hash_cache)
            tree = remote.from_entries(run.prefix, entries)
        else:
            local, tree = _scan_and_read(run, record)
        p = plan(local.files, record.files, tree.files)
        _refuse_conflicts(p, "pull", force)
        actions = p.pulls(force=force)
        check_deletes(actions, len(local.files), max_delete=max_delete, force=force, side="locally")
        outcome = Outcome(actions, tree.committed_index, dry_run, _warnings(local, tree))
        outcome.skipped += tree.unsafe
        if dry_run:
            return outcome
        with run.progress("pulling", len(actions)) as step:
            applied, skipped = apply.apply(run, tree, actions, local.stats, local.leftovers, step)
        outcome.actions = applied
        outcome.skipped += skipped
        _advance(record, p, applied, tree.committed_index)
        rewritten = {a.path for a in applied}
        record.hash_cache = {p: c for p, c in local.hash_cache.items() if p not in rewritten}
        state.save(root, record)
        return outcome
