"""rollback: a new revision whose tree is a past revision's, committed like any push."""

from __future__ import annotations

from dataclasses import dataclass

from fileconsul.commands import trust
from fileconsul.commands.context import Context
from fileconsul.commands.history import Past, contents, past
from fileconsul.commands.outcome import Outcome
from fileconsul.commands.preflight import refuse_replica, refuse_too_large
from fileconsul.errors import ConflictError, IntegrityError, InvalidInput
from fileconsul.model import plan as planner
from fileconsul.model.facts import classify
from fileconsul.model.plan import Action
from fileconsul.model.tree import RemoteTree
from fileconsul.store import commit, prepare, read


@dataclass(frozen=True)
class RollbackOptions:
    message: str = ""
    dry_run: bool = False
    force: bool = False
    max_delete: int | None = None
    node: str | None = None


def rollback(ctx: Context, revision: int, options: RollbackOptions) -> Outcome:
    """A new revision whose tree is exactly revision `revision`'s: contents, modes, and the
    files it did not have deleted. A commit like any push (check-and-set on the head, the
    delete cap); this node's files are not touched. ConflictError when another commit lands
    first."""
    tree = _signed_tree(ctx) or read.read(
        ctx.client, ctx.prefix, lock_wait=ctx.lock_wait, stale=ctx.stale
    )
    refuse_replica(tree)
    back = past(ctx, revision, known=tree)
    planned_at = back.tree.revision

    def replan(fresh: RemoteTree) -> prepare.Prepared:
        # Under the lock, after a push that died was undone: the same head, planned again.
        if fresh.revision != planned_at:
            raise ConflictError(
                f"revision {fresh.revision} was committed meanwhile; nothing was rolled back "
                f"(look at it with `fileconsul log`, then roll back again)"
            )
        known = _signed_tree(ctx) or fresh
        _, again = _prepare_rollback(ctx, past(ctx, revision, known=known), revision, options)
        assert again is not None
        return again

    actions, prepared = _prepare_rollback(ctx, back, revision, options)
    if prepared is None:
        return Outcome(actions, back.tree.revision, options.dry_run, list(back.tree.warnings))
    prepared, head = commit.commit(
        ctx.client,
        prepared,
        replan,
        lock_wait=ctx.lock_wait,
        label="rolling back",
        progress=ctx.progress,
    )
    return Outcome(actions, head.revision, False, list(back.tree.warnings), committed=head)


def _prepare_rollback(
    ctx: Context, back: Past, revision: int, options: RollbackOptions
) -> tuple[list[Action], prepare.Prepared | None]:
    """The actions that make the head's tree revision `revision`'s, and their commit (None
    for a dry run, or when there is nothing to change)."""
    tree = back.tree
    target = back.files_at(revision)
    actions = [
        Action(path, kind, target.get(path))
        for path in sorted(set(target) | set(tree.files))
        if (kind := classify(tree.files.get(path), target.get(path))) is not None
    ]
    cap = planner.delete_cap(
        actions, tree.files, side="push", max_delete=options.max_delete, force=options.force
    )
    if cap is not None:
        raise InvalidInput(cap.message)
    if options.dry_run or not actions:
        # The head's tree is already that revision's: a commit would change nothing.
        return actions, None
    limit = ctx.client.max_value_size()
    refuse_too_large(actions, limit)
    wanted = {a.path: a.target for a in actions if a.target is not None}
    kept = {p: (key, info.hash) for p, info in wanted.items() if (key := back.key_of(info))}
    found, corrupt = contents(ctx, kept)
    if corrupt:
        raise IntegrityError(
            f"revision {revision} cannot be restored: the contents kept for "
            f"{_some(sorted(corrupt))} are corrupt in Consul; nothing was changed"
        )
    if ctx.signer is not None:
        trust.check_restored(tree, list(back.commits.values()), found)
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise InvalidInput(
            f"revision {revision} cannot be restored: the contents of {_some(missing)} are no "
            "longer kept (another tool replaced them); nothing was changed"
        )
    prepared = prepare.prepare(
        ctx.client,
        tree,
        actions,
        contents=found,
        limit=limit,
        author=ctx.author(options.node),
        message=options.message or f"roll back to revision {revision}",
        keep=back.head.keep,
        rollback_of=revision,
        signer=ctx.signer,
    )
    return actions, prepared


def _signed_tree(ctx: Context) -> RemoteTree | None:
    """For a signing rollback: the head as a trusted key signed it, every strong hash known
    (None: an unsigned rollback reads the tree as it is)."""
    if ctx.signer is None:
        return None
    return read.read(
        ctx.client, ctx.prefix, lock_wait=ctx.lock_wait, trust=trust.signing_trust(ctx)
    )


def _some(paths: list[str]) -> str:
    return ", ".join(paths[:5]) + (" and more" if len(paths) > 5 else "")
