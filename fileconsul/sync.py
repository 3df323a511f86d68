"""status, push and pull: each a short composition of the local scan, the remote read, the
planner, and the apply (local) or publish (remote) step."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path

from fileconsul import (
    apply,
    fleet,
    history,
    preflight,
    publish,
    remote,
    scan,
    signals,
    state,
    writer,
)
from fileconsul.consul import KVEntry
from fileconsul.errors import CheckRejected, ConflictError, IntegrityError, InvalidInput
from fileconsul.fileinfo import FileInfo, Files, content_hash
from fileconsul.hooks import CheckResult
from fileconsul.keys import file_key
from fileconsul.plan import Action, Plan, check_deletes, plan
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
        return _warnings(self.scan, self.remote, self.sides) + unsafe


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


def _warnings(local: scan.Scan, tree: RemoteTree, seen: Sides) -> list[str]:
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
    local, tree = _scan_and_read(run, record)
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


def _scan_and_read(
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


def _refuse_conflicts(planned: Plan, command: str, force: bool) -> None:
    if planned.conflicts and not force:
        paths = ", ".join(c.path for c in planned.conflicts[:5])
        more = f" and {len(planned.conflicts) - 5} more" if len(planned.conflicts) > 5 else ""
        winner = "local" if command == "push" else "remote"
        raise ConflictError(
            f"{command} refused: {paths}{more} changed on both sides; nothing was changed "
            f"(see them with `fileconsul diff`; resolve them, or run {command} --force to "
            f"keep the {winner} version)"
        )


def _synced(
    record: state.Record, planned: Plan, applied: list[Action], tree: RemoteTree, seen: Sides
) -> None:
    """Move the record to what is now the same on both sides, at the tree's revision."""
    record.advance([*planned.converged.items(), *((a.path, a.target) for a in applied)])
    for path in seen.newly_ignored:
        record.files.pop(path, None)
    record.revision = tree.revision
    record.remote = tree.remote_state


# -- push -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushOptions:
    force: bool = False
    dry_run: bool = False
    max_delete: int | None = None
    message: str = ""
    #: Revisions to keep from now on (None: as the head says).
    keep: int | None = None
    #: The node named in the commit record (None: the agent's node name, or the host's).
    node: str | None = None


@dataclass
class _Planned:
    """A push's plan, the actions it sends and the remote tree it was made on."""

    plan: Plan
    actions: list[Action]
    tree: RemoteTree
    sides: Sides


def push(run: Run, options: PushOptions | None = None) -> Outcome:
    options = options or PushOptions()
    root = run.settings.basepath
    with state.local_lock(root):
        _recover(run)
        record = state.load(root, run.prefix)
        local, tree = _scan_and_read(run, record, push=True)
        preflight.refuse_unsafe_names(local)
        preflight.refuse_nested(run, tree)
        planned = _plan_push(local, record, tree, options)
        warnings = _push_warnings(local, planned)
        if options.dry_run:
            return Outcome(planned.actions, tree.revision, True, warnings)
        head = None
        # From the first write on, the first interrupt lets the push finish (and says so); a
        # second one stops it, and what it sent is undone. Once committed, it exits 0.
        with signals.finishing(run.notify, "the push"):
            if _needs_commit(planned):
                limit = run.client.max_value_size()
                preflight.refuse_too_large(planned.actions, limit)

                def plan_on(fresh: RemoteTree) -> publish.Prepared:
                    nonlocal planned
                    planned = _plan_push(local, record, fresh, options)
                    return _prepare(run, planned, local.contents, limit, options)

                first = _prepare(run, planned, local.contents, limit, options)
                prepared, head = publish.commit(run, first, plan_on, "pushing")
                tree = _committed(planned.tree, head, prepared.after)
            _synced(record, planned.plan, planned.actions, tree, planned.sides)
            record.hash_cache = local.hash_cache
            state.save(root, record)
        outcome = Outcome(planned.actions, tree.revision, False, warnings, committed=head)
        outcome.left_to_pull = len(planned.plan.pull) + (
            0 if options.force else len(planned.plan.conflicts)
        )
        return outcome


def _committed(tree: RemoteTree, head: history.Head, after: dict[str, FileInfo]) -> RemoteTree:
    """The remote tree once a commit landed: its files are the ones committed."""
    return RemoteTree(tree.prefix, head, dict(after), dict(after), head.index, fast=True)


def _push_warnings(local: scan.Scan, planned: _Planned) -> list[str]:
    warnings = _warnings(local, planned.tree, planned.sides)
    ignored = planned.sides.newly_ignored
    if ignored:
        more = f" and {len(ignored) - 5} more" if len(ignored) > 5 else ""
        shown = ", ".join(ignored[:5]) + more
        warnings.append(
            f"{len(ignored)} tracked paths are now ignored on this node ({shown}); they stay "
            "in Consul, and this node no longer pushes or pulls them"
        )
    return warnings


def _needs_commit(planned: _Planned) -> bool:
    """Changes to send, keys another tool wrote to adopt, a tree without a revision yet, or a
    push that never committed to undo."""
    tree = planned.tree
    first = tree.head is None and bool(tree.files)
    return bool(planned.actions or tree.adopt or first or tree.uncommitted or planned.sides.gone)


def _plan_push(
    local: scan.Scan, record: state.Record, tree: RemoteTree, options: PushOptions
) -> _Planned:
    seen = sides(local, record, tree)
    if seen.gone:
        # Re-create the tree from this node: every local file is sent again.
        seen = Sides(seen.local, {}, {}, seen.newly_ignored, True)
    planned = plan(seen.local, seen.base, seen.remote)
    _refuse_conflicts(planned, "push", options.force)
    actions = planned.pushes(force=options.force)
    tracked = len(seen.remote)
    check_deletes(
        actions, tracked, max_delete=options.max_delete, force=options.force, side="in Consul"
    )
    return _Planned(planned, actions, tree, seen)


def _prepare(
    run: Run,
    planned: _Planned,
    contents: dict[str, bytes],
    limit: int,
    options: PushOptions,
) -> publish.Prepared:
    tree = planned.tree
    keep = options.keep or (tree.head.keep if tree.head else history.DEFAULT_KEEP)
    return publish.prepare(
        run,
        tree,
        planned.actions,
        contents=contents,
        limit=limit,
        node=fleet.node_name(run.client, options.node),
        message=options.message,
        keep=keep,
    )


# -- pull -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PullOptions:
    force: bool = False
    dry_run: bool = False
    max_delete: int | None = None
    #: Keep what was applied in the record until the --exec hook has been handed it.
    for_hooks: bool = False
    #: Look for writes by other tools too (False: trust the head alone, as a watcher woken
    #: by a commit does; a value that does not match is then read again with a full look).
    others: bool = True
    #: Runs the --check command on the applied changes (and revision); a rejection puts back
    #: what was applied.
    check: Callable[[list[tuple[str, str]], int], CheckResult] | None = None
    #: Says why a revision must not be applied here (halted, rejected before), or None.
    hold: Callable[[int], str | None] | None = None


def pull(
    run: Run,
    options: PullOptions | None = None,
    *,
    entries: list[KVEntry] | None = None,
    head: history.Head | None = None,
) -> Outcome:
    """Apply remote changes. `entries`, when given, are values already read (a consul-watch
    payload), and `head` the head as just read: Consul is not asked for those again."""
    options = options or PullOptions()
    try:
        return _pull(run, options, entries, head)
    except IntegrityError:
        if options.others and not run.stale:
            raise
        # Read from a server behind the one that answered the head, or a push under way:
        # a full read from the leader says which, and waits for a push that holds the lock.
        return _pull(replace(run, stale=False), replace(options, others=True), entries, None)


def _pull(
    run: Run, options: PullOptions, entries: list[KVEntry] | None, head: history.Head | None
) -> Outcome:
    root = run.settings.basepath
    with state.local_lock(root):
        _recover(run)
        record = state.load(root, run.prefix)
        previous = record.revision
        local, tree = _scan_and_read(run, record, others=options.others, head=head)
        if entries is not None:
            _use_payload(tree, entries)
        seen = sides(local, record, tree)
        planned = plan(seen.local, seen.base, seen.remote)
        _refuse_conflicts(planned, "pull", options.force)
        actions = planned.pulls(force=options.force)
        check_deletes(
            actions,
            len(seen.local),
            max_delete=options.max_delete,
            force=options.force,
            side="locally",
        )
        outcome = Outcome(actions, tree.revision, options.dry_run, _warnings(local, tree, seen))
        outcome.previous_revision = previous
        outcome.head_index = tree.head.index if tree.head else 0
        outcome.skipped += tree.unsafe
        outcome.held = options.hold(tree.revision) if options.hold and actions else None
        if options.dry_run or outcome.held:
            outcome.actions = [] if outcome.held else actions
            return outcome
        after = (
            f"interrupted once revision {tree.revision} was applied; its hooks did not run "
            "(the next pull or watch hands them its changes)"
        )
        check = options.check
        with (
            run.progress("pulling", len(actions)) as step,
            apply.staged(run, tree, actions, local.leftovers, step, keep=bool(check)) as ready,
        ):
            if check is None:
                with signals.critical(after):
                    # From the first rename on, a pull finishes: its files, then its record.
                    ready.commit(local.stats)
                    _pulled(root, record, planned, tree, seen, local, ready, outcome, options)
                return outcome
            # A checked apply is kept only once its check passed: interrupted before, it is
            # put back (as the block ends).
            with signals.critical(f"interrupted before revision {tree.revision} was checked"):
                ready.commit(local.stats)
            _checked(ready, check, tree.revision)
            with signals.critical(after):
                ready.finish()
                _pulled(root, record, planned, tree, seen, local, ready, outcome, options)
        return outcome


def _checked(
    ready: apply.Staged,
    check: Callable[[list[tuple[str, str]], int], CheckResult],
    revision: int,
) -> None:
    """Run the --check command on the applied tree; CheckRejected, with every path put back
    as it was, when it fails. (Interrupted meanwhile, the apply is put back too.)"""
    result = check([(a.path, a.change) for a in ready.applied], revision)
    if result.exit == 0:
        return
    with signals.critical(f"interrupted while revision {revision} was put back"):
        ready.put_back()
    raise CheckRejected(
        f"the --check command rejected revision {revision} (exit {result.exit}); every file "
        "was put back as it was",
        revision=revision,
        exit=result.exit,
        output=result.tail,
    )


def _pulled(
    root: Path,
    record: state.Record,
    planned: Plan,
    tree: RemoteTree,
    seen: Sides,
    local: scan.Scan,
    ready: apply.Staged,
    outcome: Outcome,
    options: PullOptions,
) -> None:
    """Record what the pull applied (the base moves, and, with hooks, what they are owed)."""
    outcome.actions = ready.applied
    outcome.skipped += ready.skipped
    _synced(record, planned, ready.applied, tree, seen)
    rewritten = {a.path for a in ready.applied}
    record.hash_cache = {p: c for p, c in local.hash_cache.items() if p not in rewritten}
    done = record.unreported + [(a.path, a.change) for a in ready.applied]
    record.unreported = done if options.for_hooks else []
    outcome.for_hooks = done
    state.save(root, record)


def _recover(run: Run) -> None:
    """Put back an apply a crash left unchecked, before anything reads the tree."""
    if writer.recover(run.settings.basepath):
        run.notify(
            "put back an apply that was interrupted before its --check had passed (it is "
            "applied and checked again)"
        )


def _use_payload(tree: RemoteTree, entries: list[KVEntry]) -> None:
    """Take the values a consul-watch payload carries, where they are the committed ones."""
    for entry in entries:
        path = entry.key[len(tree.prefix) + 1 :]
        info = tree.files.get(path)
        if info is None or path in tree.sources or entry.key != file_key(tree.prefix, path):
            continue
        if content_hash(entry.value) == info.hash:
            tree.values.setdefault(path, entry.value)


def local_revision(run: Run) -> int:
    """The revision this node's record says it synced."""
    return state.load(run.settings.basepath, run.prefix).revision


def hooks_done(run: Run) -> None:
    """The --exec hook has been handed what was applied: forget it."""
    root = run.settings.basepath
    with state.local_lock(root):
        record = state.load(root, run.prefix)
        if record.unreported:
            record.unreported = []
            state.save(root, record)
