"""Remote changes delivered to this node: pull (checked, when --check is given), run the hooks,
halt the rollout when it failed here, write the fleet report. The one path that `pull`,
`watch` and a `consul watch` handler share."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field

from fileconsul.commands import pull
from fileconsul.commands.context import Context
from fileconsul.commands.outcome import Outcome
from fileconsul.commands.pull import CheckResult
from fileconsul.errors import (
    CheckRejected,
    ConflictError,
    ConsulUnavailable,
    FileconsulError,
    Interrupted,
)
from fileconsul.fleet import reports, rollout
from fileconsul.fleet.hooks import Hooks, run_check, run_hook
from fileconsul.local import record as records
from fileconsul.model.records import Head
from fileconsul.model.tree import KVEntry


@dataclass(frozen=True)
class DeliverOptions:
    hooks: Hooks = field(default_factory=Hooks)
    report: bool = True
    node: str | None = None
    force: bool = False
    dry_run: bool = False
    max_delete: int | None = None
    #: Look for writes by other tools (see pull.PullOptions.others).
    others: bool = True
    #: Halt the rollout of a revision that --check rejects or --exec fails on here.
    halt_on_failure: bool = False
    #: Do not apply a halted revision (read the halt before applying).
    respect_halts: bool = False
    #: A revision this node's --check rejected: not applied again.
    rejected: int | None = None


@dataclass
class Delivery:
    """What one delivery did: the pull's outcome or its error, the hooks' exit statuses, the
    halt that held it or that it made, and notes on what could not be done around it."""

    outcome: Outcome | None = None
    error: FileconsulError | None = None
    #: The --exec command that ran, and its exit status.
    hook: str | None = None
    hook_exit: int | None = None
    #: The --check command's result, when it ran.
    check: CheckResult | None = None
    check_seconds: float = 0.0
    apply_seconds: float = 0.0
    #: The halt that kept this node from applying, or the one it made.
    halt: rollout.Halt | None = None
    halted_here: bool = False
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

    @property
    def revision(self) -> int:
        if isinstance(self.error, CheckRejected):
            return self.error.revision
        return self.outcome.revision if self.outcome else 0


def deliver(
    ctx: Context,
    options: DeliverOptions,
    *,
    entries: Sequence[KVEntry] | None = None,
    head: Head | None = None,
) -> Delivery:
    """Pull (with the values of a consul-watch payload, or the head a watcher was woken
    with), check and run `--exec` when something changed, `--on-failure` when something
    failed; halt the rollout when asked to; then report."""
    delivery = Delivery()
    started = time.monotonic()
    try:
        delivery.outcome = pull.pull(
            ctx, _pull_options(ctx, options, delivery), entries=entries, head=head
        )
    except Interrupted:
        raise
    except FileconsulError as exc:
        delivery.error = exc
    delivery.apply_seconds = time.monotonic() - started - delivery.check_seconds
    outcome = delivery.outcome
    root = ctx.basepath
    exec_cmd = options.hooks.exec_cmd
    if exec_cmd and outcome is not None and not outcome.dry_run and outcome.for_hooks:
        delivery.hook_exit = run_hook(
            exec_cmd,
            basepath=root,
            prefix=ctx.prefix,
            revision=outcome.revision,
            changes=outcome.for_hooks,
        )
        delivery.hook = exec_cmd
        with suppress(FileconsulError):
            pull.hooks_done(ctx)
    if delivery.failed and options.hooks.on_failure:
        _on_failure(ctx, options.hooks.on_failure, delivery)
    if options.halt_on_failure and delivery.revision and _halting(delivery):
        _halt(ctx, options, delivery)
    unreachable = isinstance(delivery.error, ConsulUnavailable)
    if options.report and not options.dry_run and not unreachable:
        moved = outcome is not None and (
            delivery.changed or outcome.revision != outcome.previous_revision
        )
        note = reports.report(ctx.client, ctx.prefix, _report(ctx, options, delivery), moved=moved)
        delivery.notes += [note] if note else []
    return delivery


def _pull_options(ctx: Context, options: DeliverOptions, delivery: Delivery) -> pull.PullOptions:
    check_cmd = options.hooks.check

    def check(changes: list[tuple[str, str]], revision: int) -> CheckResult:
        assert check_cmd is not None
        started = time.monotonic()
        delivery.check = run_check(
            check_cmd,
            basepath=ctx.basepath,
            prefix=ctx.prefix,
            revision=revision,
            changes=changes,
        )
        delivery.check_seconds = time.monotonic() - started
        return delivery.check

    def hold(revision: int) -> str | None:
        if options.rejected is not None and revision == options.rejected:
            return f"revision {revision} was rejected by --check here; waiting for the next one"
        if options.respect_halts:
            found = rollout.halted(ctx.client, ctx.prefix, revision)
            if found is not None:
                delivery.halt = found
                return f"revision {revision} is halted ({found.node}: {found.reason})"
        return None

    return pull.PullOptions(
        force=options.force,
        dry_run=options.dry_run,
        max_delete=options.max_delete,
        for_hooks=bool(options.hooks.exec_cmd),
        others=options.others,
        check=check if check_cmd else None,
        hold=hold,
    )


def _on_failure(ctx: Context, command: str, delivery: Delivery) -> None:
    outcome = delivery.outcome
    if delivery.error is not None:
        reason = str(delivery.error)
    else:
        reason = f"hook exited {delivery.hook_exit}"
    run_hook(
        command,
        basepath=ctx.basepath,
        prefix=ctx.prefix,
        revision=delivery.revision or None,
        changes=outcome.for_hooks if outcome else [],
        error=reason,
    )


def _halting(delivery: Delivery) -> bool:
    """A rejection by --check, or a failed --exec: what stops a rollout."""
    return isinstance(delivery.error, CheckRejected) or delivery.hook_exit not in (None, 0)


def _halt(ctx: Context, options: DeliverOptions, delivery: Delivery) -> None:
    if isinstance(delivery.error, CheckRejected):
        reason = f"--check exited {delivery.error.exit}"
        if delivery.error.output:
            reason += f": {delivery.error.output.splitlines()[-1]}"
    else:
        reason = f"--exec exited {delivery.hook_exit}"
    stop = rollout.Halt(
        delivery.revision, ctx.client.node_name(options.node), reports.now(), reason
    )
    try:
        rollout.halt(ctx.client, ctx.prefix, stop)
        delivery.halt, delivery.halted_here = stop, True
    except FileconsulError as exc:
        delivery.notes.append(f"the rollout could not be halted ({exc})")


def _report(ctx: Context, options: DeliverOptions, delivery: Delivery) -> reports.Report:
    error = delivery.error
    if isinstance(error, CheckRejected):
        result: reports.Result = "rejected"
    elif delivery.outcome is not None and delivery.outcome.held and delivery.halt is not None:
        result = "halted"
    elif isinstance(error, ConflictError):
        result = "conflict"
    elif delivery.failed:
        result = "error"
    else:
        result = "ok"
    outcome = delivery.outcome
    if isinstance(error, CheckRejected):
        revision = error.revision
    elif outcome is not None:
        revision = outcome.revision if not outcome.held else outcome.previous_revision
    else:
        try:
            revision = records.load(ctx.basepath, ctx.prefix).revision
        except FileconsulError:
            revision = 0
    message = str(error or "") or (outcome.held if outcome and outcome.held else "") or ""
    return reports.Report(
        node=ctx.client.node_name(options.node),
        revision=revision,
        time=reports.now(),
        result=result,
        message=message,
        applied=len(outcome.actions) if outcome and delivery.changed else 0,
        hook=options.hooks.exec_cmd,
        hook_exit=delivery.hook_exit,
        check_exit=error.exit if isinstance(error, CheckRejected) else None,
        output=error.output if isinstance(error, CheckRejected) else "",
    )


def report_push(ctx: Context, node: str | None, outcome: Outcome) -> list[str]:
    """After a push that left nothing to pull, this node holds the revision it committed: it
    reports so, as a pull would. Notes on what could not be done."""
    if outcome.dry_run or outcome.left_to_pull or not outcome.revision:
        return []
    new = reports.Report(ctx.client.node_name(node), outcome.revision, reports.now(), "ok")
    note = reports.report(ctx.client, ctx.prefix, new, moved=outcome.committed is not None)
    return [note] if note else []
