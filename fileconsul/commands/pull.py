"""pull: apply Consul's changes to this node, checked when asked, and remember what the hooks
are owed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from fileconsul.commands import apply, interrupts, trust
from fileconsul.commands.context import Context
from fileconsul.commands.outcome import Outcome
from fileconsul.commands.pipeline import (
    View,
    advance,
    applying,
    changing,
    look_narrow,
    notes,
    planned,
)
from fileconsul.errors import CheckRejected, IntegrityError
from fileconsul.local import record as records
from fileconsul.local.lock import local_lock
from fileconsul.model.drift import restoring
from fileconsul.model.facts import content_hash
from fileconsul.model.plan import Action, Plan
from fileconsul.model.records import Head
from fileconsul.model.tree import KVEntry, RemoteTree
from fileconsul.store.layout import file_key


class CheckResult(NamedTuple):
    exit: int
    #: The last lines of what it printed (stdout and stderr together).
    tail: str


#: Runs the --check command on the applied changes (path, change) of a revision.
Check = Callable[[list[tuple[str, str]], int], CheckResult]


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
    #: A rejection puts back what was applied.
    check: Check | None = None
    #: Says why a revision must not be applied here (halted, rejected before), or None.
    hold: Callable[[int], str | None] | None = None
    #: Paths edited here (drift) to put back to the committed version, as a pull writes it.
    restore: frozenset[str] = frozenset()


def pull(
    ctx: Context,
    options: PullOptions | None = None,
    *,
    entries: Sequence[KVEntry] | None = None,
    head: Head | None = None,
) -> Outcome:
    """Apply remote changes. `entries`, when given, are values already read (a consul-watch
    payload), and `head` the head as just read: Consul is not asked for those again."""
    options = options or PullOptions()
    try:
        return _pull(ctx, options, entries, head)
    except IntegrityError:
        if options.others and not ctx.stale:
            raise
        # Read from a server behind the one that answered the head, or a push under way:
        # a full read from the leader says which, and waits for a push that holds the lock.
        return _pull(replace(ctx, stale=False), replace(options, others=True), entries, None)


@dataclass(frozen=True)
class _Pull:
    """One pull under way: what it plans on, its plan, and what it reports."""

    ctx: Context
    options: PullOptions
    view: View
    plan: Plan
    outcome: Outcome

    @property
    def revision(self) -> int:
        return self.view.tree.revision


def _pull(
    ctx: Context, options: PullOptions, entries: Sequence[KVEntry] | None, head: Head | None
) -> Outcome:
    with changing(ctx) as record:
        previous = record.revision
        view = look_narrow(ctx, record, others=options.others, head=head, also=options.restore)
        if entries is not None:
            view = replace(view, tree=with_payload(view.tree, entries))
        if options.restore:
            view = replace(view, sides=restoring(view.sides, options.restore))
        trust.refuse_untrusted(ctx, view.tree, previous)
        found, actions = planned(view, "pull", force=options.force, max_delete=options.max_delete)
        view = replace(view, tree=trust.with_strong(ctx, view.tree, actions))
        tree = view.tree
        outcome = Outcome(actions, tree.revision, options.dry_run, notes(view))
        outcome.previous_revision = previous
        outcome.head_index = tree.head.index if tree.head else 0
        outcome.skipped += tree.unsafe
        outcome.held = options.hold(tree.revision) if options.hold and actions else None
        outcome.prefix = ctx.prefix
        if tree.verified is not None:
            outcome.signer = tree.verified.sealed.key
            outcome.signed_at = tree.verified.sealed.time
        outcome.nothing_remote = (
            tree.head is None and not tree.files and not tree.unsafe and not tree.legacy_index
        )
        if options.dry_run or outcome.held:
            outcome.actions = [] if outcome.held else actions
            return outcome
        pulling = _Pull(ctx, options, view, found, outcome)
        if actions:
            _apply(pulling, actions)
        else:
            # Nothing to write: no staging, no --check; the record moves to the revision.
            with interrupts.critical(f"interrupted once revision {tree.revision} was recorded"):
                _record(pulling, [], [])
        return outcome


def _apply(pull: _Pull, actions: list[Action]) -> None:
    ctx, view, check = pull.ctx, pull.view, pull.options.check
    after = (
        f"interrupted once revision {pull.revision} was applied; its hooks did not run "
        "(the next pull or watch hands them its changes)"
    )
    with (
        applying(ctx),
        ctx.progress("pulling", len(actions)) as step,
        apply.staged(
            ctx, view.tree, actions, view.local.leftovers, step, keep=check is not None
        ) as ready,
    ):
        if check is None:
            with interrupts.critical(after):
                # From the first rename on, a pull finishes: its files, then its record.
                ready.txn.commit(view.local.stats)
                _record(pull, ready.applied, ready.skipped)
            return
        # A checked apply is kept only once its check passed: interrupted before, it is
        # put back (as the block ends).
        with interrupts.critical(f"interrupted before revision {pull.revision} was checked"):
            ready.txn.commit(view.local.stats)
        _checked(ready, check, pull.revision)
        with interrupts.critical(after):
            ready.txn.finish()
            _record(pull, ready.applied, ready.skipped)


def _checked(ready: apply.Staged, check: Check, revision: int) -> None:
    """Run the --check command on the applied tree; CheckRejected, with every path put back
    as it was, when it fails. (Interrupted meanwhile, the apply is put back too.)"""
    result = check([(a.path, a.change) for a in ready.applied], revision)
    if result.exit == 0:
        return
    with interrupts.critical(f"interrupted while revision {revision} was put back"):
        ready.txn.put_back()
    raise CheckRejected(
        f"the --check command rejected revision {revision} (exit {result.exit}); every file "
        "was put back as it was",
        revision=revision,
        exit=result.exit,
        output=result.tail,
    )


def _record(pull: _Pull, applied: list[Action], skipped: list[tuple[str, str]]) -> None:
    """Record what the pull applied (the base moves, and, with hooks, what they are owed)."""
    view, outcome = pull.view, pull.outcome
    record = view.record
    outcome.actions = applied
    outcome.skipped += skipped
    advance(record, pull.plan, applied, view.tree, view.sides)
    if not view.narrow:
        rewritten = {a.path for a in applied}
        cache = view.local.hash_cache
        record.hash_cache = {p: c for p, c in cache.items() if p not in rewritten}
    done = record.unreported + [(a.path, a.change) for a in applied]
    record.unreported = done if pull.options.for_hooks else []
    outcome.for_hooks = done
    # A narrow pull read no hash cache: the one on disk stands (entries keyed by stat never
    # vouch for a file it rewrote).
    records.save(pull.ctx.basepath, record, cache=not view.narrow)


def with_payload(tree: RemoteTree, entries: Sequence[KVEntry]) -> RemoteTree:
    """The tree with the values a consul-watch payload carries, where they are the committed
    ones (read already: not read again)."""
    values = dict(tree.values)
    for entry in entries:
        path = entry.key[len(tree.prefix) + 1 :]
        info = tree.files.get(path)
        if info is None or path in tree.set_aside or entry.key != file_key(tree.prefix, path):
            continue
        if content_hash(entry.value) == info.hash:
            values.setdefault(path, entry.value)
    return replace(tree, values=values)


def local_revision(ctx: Context) -> int:
    """The revision this node's record says it synced."""
    return records.load(ctx.basepath, ctx.prefix, cache=False).revision


def hooks_done(ctx: Context) -> None:
    """The --exec hook has been handed what was applied: forget it."""
    with local_lock(ctx.basepath):
        record = records.load(ctx.basepath, ctx.prefix, cache=False)
        if record.unreported:
            record.unreported = []
            records.save(ctx.basepath, record, cache=False)
