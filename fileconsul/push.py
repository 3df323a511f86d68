"""push: send this node's changes to Consul as one commit."""

from __future__ import annotations

from dataclasses import dataclass

from fileconsul import fleet, history, preflight, publish, scan, signals, state, sync
from fileconsul.fileinfo import FileInfo
from fileconsul.plan import Action, Plan, check_deletes, plan
from fileconsul.remote import RemoteTree
from fileconsul.run import Run


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
    sides: sync.Sides


def push(run: Run, options: PushOptions | None = None) -> sync.Outcome:
    options = options or PushOptions()
    root = run.settings.basepath
    with state.local_lock(root):
        sync.recover(run)
        record = state.load(root, run.prefix)
        local, tree = sync.scan_and_read(run, record, push=True)
        preflight.refuse_unsafe_names(local)
        preflight.refuse_nested(run, tree)
        planned = _plan_push(local, record, tree, options)
        warnings = _push_warnings(local, planned)
        if options.dry_run:
            return sync.Outcome(planned.actions, tree.revision, True, warnings)
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
            sync.synced(record, planned.plan, planned.actions, tree, planned.sides)
            record.hash_cache = local.hash_cache
            state.save(root, record)
        outcome = sync.Outcome(planned.actions, tree.revision, False, warnings, committed=head)
        outcome.left_to_pull = len(planned.plan.pull) + (
            0 if options.force else len(planned.plan.conflicts)
        )
        return outcome


def _committed(tree: RemoteTree, head: history.Head, after: dict[str, FileInfo]) -> RemoteTree:
    """The remote tree once a commit landed: its files are the ones committed."""
    return RemoteTree(tree.prefix, head, dict(after), dict(after), head.index, fast=True)


def _push_warnings(local: scan.Scan, planned: _Planned) -> list[str]:
    warnings = sync.notes(local, planned.tree, planned.sides)
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
    seen = sync.sides(local, record, tree)
    if seen.gone:
        # Re-create the tree from this node: every local file is sent again.
        seen = sync.Sides(seen.local, {}, {}, seen.newly_ignored, True)
    planned = plan(seen.local, seen.base, seen.remote)
    sync.refuse_conflicts(planned, "push", options.force)
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
