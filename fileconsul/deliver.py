"""Remote changes delivered to this node: pull, run the hooks, write the fleet report. The one
path that `pull`, `watch` and a `consul watch` handler share."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field

from fileconsul import fleet, state, sync
from fileconsul.consul import KVEntry
from fileconsul.errors import ConflictError, ConsulUnavailable, FileconsulError, Interrupted
from fileconsul.history import Head
from fileconsul.hooks import Hooks, run_hook
from fileconsul.run import Run


@dataclass(frozen=True)
class DeliverOptions:
    hooks: Hooks = field(default_factory=Hooks)
    report: bool = True
    node: str | None = None
    force: bool = False
    dry_run: bool = False
    max_delete: int | None = None
    #: Look for writes by other tools (see sync.PullOptions.others).
    others: bool = True


@dataclass
class Delivery:
    """What one delivery did: the pull's outcome or its error, the hook's exit status, and
    notes on what could not be done around it."""

    outcome: sync.Outcome | None = None
    error: FileconsulError | None = None
    #: The --exec command that ran, and its exit status.
    hook: str | None = None
    hook_exit: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        return self.outcome.exit_code if self.outcome else 0

    @property
    def failed(self) -> bool:
        return self.error is not None or self.hook_exit not in (None, 0)

    @property
    def changed(self) -> bool:
        return self.outcome is not None and not self.outcome.dry_run and bool(self.outcome.actions)


def deliver(
    run: Run,
    options: DeliverOptions,
    *,
    entries: list[KVEntry] | None = None,
    head: Head | None = None,
) -> Delivery:
    """Pull (with the values of a consul-watch payload, or the head a watcher was woken
    with), run `--exec` when something changed and `--on-failure` when something failed,
    then report."""
    delivery = Delivery()
    exec_cmd = options.hooks.exec_cmd
    pull = sync.PullOptions(
        force=options.force,
        dry_run=options.dry_run,
        max_delete=options.max_delete,
        for_hooks=bool(exec_cmd),
        others=options.others,
    )
    try:
        delivery.outcome = sync.pull(run, pull, entries=entries, head=head)
    except Interrupted:
        raise
    except FileconsulError as exc:
        delivery.error = exc
    outcome = delivery.outcome
    root = run.settings.basepath
    if exec_cmd and outcome is not None and not outcome.dry_run and outcome.for_hooks:
        delivery.hook_exit = run_hook(
            exec_cmd,
            basepath=root,
            prefix=run.prefix,
            revision=outcome.revision,
            changes=outcome.for_hooks,
        )
        delivery.hook = exec_cmd
        with suppress(FileconsulError):
            sync.hooks_done(run)
    if delivery.failed and options.hooks.on_failure:
        reason = str(delivery.error) if delivery.error else f"hook exited {delivery.hook_exit}"
        run_hook(
            options.hooks.on_failure,
            basepath=root,
            prefix=run.prefix,
            revision=outcome.revision if outcome else None,
            changes=outcome.for_hooks if outcome else [],
            error=reason,
        )
    unreachable = isinstance(delivery.error, ConsulUnavailable)
    if options.report and not options.dry_run and not unreachable:
        moved = outcome is not None and (
            delivery.changed or outcome.revision != outcome.previous_revision
        )
        note = fleet.report(run.client, run.prefix, _report(run, options, delivery), moved=moved)
        delivery.notes += [note] if note else []
    return delivery


def _report(run: Run, options: DeliverOptions, delivery: Delivery) -> fleet.Report:
    if isinstance(delivery.error, ConflictError):
        result: fleet.Result = "conflict"
    elif delivery.failed:
        result = "error"
    else:
        result = "ok"
    outcome = delivery.outcome
    if outcome is not None:
        revision = outcome.revision
    else:
        try:
            revision = state.load(run.settings.basepath, run.prefix).revision
        except FileconsulError:
            revision = 0
    return fleet.Report(
        node=fleet.node_name(run.client, options.node),
        revision=revision,
        time=fleet.now(),
        result=result,
        message=str(delivery.error or ""),
        applied=len(outcome.actions) if outcome and delivery.changed else 0,
        hook=options.hooks.exec_cmd,
        hook_exit=delivery.hook_exit,
    )


def report_push(run: Run, node: str | None, outcome: sync.Outcome) -> list[str]:
    """After a push that left nothing to pull, this node holds the revision it committed: it
    reports so, as a pull would. Notes on what could not be done."""
    if outcome.dry_run or outcome.left_to_pull or not outcome.revision:
        return []
    new = fleet.Report(fleet.node_name(run.client, node), outcome.revision, fleet.now(), "ok")
    note = fleet.report(run.client, run.prefix, new, moved=outcome.committed is not None)
    return [note] if note else []
