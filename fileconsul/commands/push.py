"""push: send this node's changes to Consul as one commit."""

from __future__ import annotations

from dataclasses import dataclass, replace

from fileconsul.commands import interrupts, preflight, trust
from fileconsul.commands.context import Context
from fileconsul.commands.outcome import Outcome
from fileconsul.commands.pipeline import View, advance, changing, look, notes, planned, view_of
from fileconsul.errors import UsageError
from fileconsul.local import record as records
from fileconsul.local.scan import read_file
from fileconsul.model import plan as planner
from fileconsul.model.plan import Action, Plan
from fileconsul.model.records import DEFAULT_KEEP
from fileconsul.model.tree import RemoteTree, committed_tree
from fileconsul.store import commit, prepare, read


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
    #: Start a new history over one whose head was lost (its revisions follow the old ones).
    new_history: bool = False
    #: Commit a signed revision even when nothing changed (a fresh signature).
    renew: bool = False


@dataclass(frozen=True)
class _Planned:
    """A push's view (its sides re-created when the tree was deleted whole), its plan and the
    actions it sends."""

    view: View
    plan: Plan
    actions: list[Action]


def push(ctx: Context, options: PushOptions | None = None) -> Outcome:
    options = options or PushOptions()
    with changing(ctx) as record:
        view = look(ctx, record, push=True)
        preflight.refuse_replica(view.tree)
        preflight.refuse_unsafe_names(view.local)
        preflight.refuse_nested(ctx, view.tree)
        ready = _plan(view, options)
        warnings = _warnings(ready.view)
        if options.dry_run:
            return Outcome(ready.actions, view.tree.revision, True, warnings)
        head = None
        tree = view.tree
        why = _why_commit(ctx, ready, options)
        if why is not None:
            limit = ctx.client.max_value_size()
            preflight.refuse_too_large(ready.actions, limit)

            def plan_on(fresh: RemoteTree) -> prepare.Prepared:
                nonlocal ready
                ready = _plan(view_of(record, view.local, fresh), options)
                return _prepare(ctx, ready, limit, replace(options, message=why))

            def reread(session: str) -> RemoteTree:
                return trust.read_to_sign(ctx, record, session)

            # From the first write on, the first interrupt lets the push finish (and says
            # so); a second one stops it, and what it sent is undone. Once committed, it
            # exits 0. Waiting for another push's lock, an interrupt stops it at once.
            prepared, head = commit.commit(
                ctx.client,
                _prepare(ctx, ready, limit, replace(options, message=why)),
                plan_on,
                lock_wait=ctx.lock_wait,
                progress=ctx.progress,
                notify=ctx.notify,
                sending=lambda: interrupts.finishing(ctx.notify, "the push"),
                reread=reread if ctx.signer is not None else None,
            )
            tree = replace(
                committed_tree(head, ctx.prefix, prepared.after), verified=prepared.verified
            )
        with interrupts.finishing(ctx.notify, "the push"):
            advance(record, ready.plan, ready.actions, tree, ready.view.sides)
            record.hash_cache = view.local.hash_cache
            records.save(ctx.basepath, record, cache=True)
        outcome = Outcome(ready.actions, tree.revision, False, warnings, committed=head)
        outcome.left_to_pull = len(ready.plan.pull) + (
            0 if options.force else len(ready.plan.conflicts)
        )
        return outcome


def _plan(view: View, options: PushOptions) -> _Planned:
    if options.new_history and view.tree.orphaned is None:
        raise UsageError(
            f"--new-history starts a history over one whose head was lost; {view.tree.prefix} "
            "has its head (nothing was pushed)"
        )
    if view.sides.gone:
        view = replace(view, sides=planner.recreating(view.sides))
    found, actions = planned(
        view,
        "push",
        force=options.force,
        max_delete=options.max_delete,
        new_history=options.new_history,
    )
    return _Planned(view, found, actions)


def _why_commit(ctx: Context, ready: _Planned, options: PushOptions) -> str | None:
    """The message of the commit this push makes (the operator's, or why it commits with no
    change of its own), or None when it commits nothing."""
    tree = ready.view.tree
    if planner.needs_commit(ready.actions, tree, ready.view.sides):
        return options.message
    head = tree.head
    if head is None:
        return None
    if options.keep is not None and options.keep != head.keep:
        return options.message or f"keep the last {options.keep} revisions"
    if ctx.signer is not None:
        why = _why_sign(tree, options)
        if why is not None:
            return why
    # A push with nothing to send checks the manifest that nodes without the tree read: a
    # corrupt one is written again, as the warning they print says.
    if not read.manifest_readable(ctx.client, ctx.prefix, head):
        return options.message or f"write again the manifest of revision {head.revision}"
    return None


def _why_sign(tree: RemoteTree, options: PushOptions) -> str | None:
    """Why a signing push commits with nothing of its own to send: keys to put back, a head
    it does not build on (unsigned, or written back), or a fresh signature asked for."""
    if tree.foreign:
        return options.message or f"put back {len(tree.foreign)} keys written by another tool"
    if tree.verified is None or tree.verified.revision != tree.revision:
        return options.message or "sign the tree"
    if options.renew:
        return options.message or "renew the signature"
    return None


def _warnings(view: View) -> list[str]:
    warnings = notes(view)
    tree = view.tree
    if tree.foreign and tree.verified is not None:
        after = prepare.files_after(tree.files, [])
        back, left = trust.put_back(tree, view.local.files, after)
        if back:
            warnings.append(
                f"{len(back)} keys held what the signed tree does not (written by another "
                f"tool: {', '.join(back[:5])}); a signed push puts them back"
            )
        if left:
            warnings.append(
                f"{len(left)} keys hold what the signed tree does not, and this node cannot "
                f"put them back (it does not hold them as signed): {', '.join(left[:5])}"
            )
    ignored = view.sides.newly_ignored
    if ignored:
        more = f" and {len(ignored) - 5} more" if len(ignored) > 5 else ""
        shown = ", ".join(ignored[:5]) + more
        warnings.append(
            f"{len(ignored)} tracked paths are now ignored on this node ({shown}); they stay "
            "in Consul, and this node no longer pushes or pulls them"
        )
    return warnings


def _prepare(ctx: Context, ready: _Planned, limit: int, options: PushOptions) -> prepare.Prepared:
    tree = ready.view.tree
    keep = options.keep or (tree.head.keep if tree.head else DEFAULT_KEEP)

    def source(path: str) -> bytes:
        return read_file(ctx.basepath, path, limit)

    back: list[str] = []
    if ctx.signer is not None and tree.foreign:
        after = prepare.files_after(tree.files, ready.actions)
        back, _ = trust.put_back(tree, ready.view.local.files, after)
    return prepare.prepare(
        ctx.client,
        tree,
        ready.actions,
        contents=ready.view.local.contents,
        source=source,
        limit=limit,
        author=ctx.author(options.node),
        message=options.message,
        keep=keep,
        signer=ctx.signer,
        put_back=back,
    )
