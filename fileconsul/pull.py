"""pull: apply Consul's changes to this node, checked when asked, and remember what the hooks
are owed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from fileconsul import apply, history, scan, signals, state, sync
from fileconsul.consul import KVEntry
from fileconsul.errors import CheckRejected, IntegrityError
from fileconsul.fileinfo import content_hash
from fileconsul.hooks import CheckResult
from fileconsul.keys import file_key
from fileconsul.plan import Plan, check_deletes, plan
from fileconsul.remote import RemoteTree
from fileconsul.run import Run


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
) -> sync.Outcome:
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
) -> sync.Outcome:
    root = run.settings.basepath
    with state.local_lock(root):
        sync.recover(run)
        record = state.load(root, run.prefix)
        previous = record.revision
        local, tree = sync.scan_and_read(run, record, others=options.others, head=head)
        if entries is not None:
            _use_payload(tree, entries)
        seen = sync.sides(local, record, tree)
        planned = plan(seen.local, seen.base, seen.remote)
        sync.refuse_conflicts(planned, "pull", options.force)
        actions = planned.pulls(force=options.force)
        check_deletes(
            actions,
            len(seen.local),
            max_delete=options.max_delete,
            force=options.force,
            side="locally",
        )
        outcome = sync.Outcome(
            actions, tree.revision, options.dry_run, sync.notes(local, tree, seen)
        )
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
    seen: sync.Sides,
    local: scan.Scan,
    ready: apply.Staged,
    outcome: sync.Outcome,
    options: PullOptions,
) -> None:
    """Record what the pull applied (the base moves, and, with hooks, what they are owed)."""
    outcome.actions = ready.applied
    outcome.skipped += ready.skipped
    sync.synced(record, planned, ready.applied, tree, seen)
    rewritten = {a.path for a in ready.applied}
    record.hash_cache = {p: c for p, c in local.hash_cache.items() if p not in rewritten}
    done = record.unreported + [(a.path, a.change) for a in ready.applied]
    record.unreported = done if options.for_hooks else []
    outcome.for_hooks = done
    state.save(root, record)


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
