"""Remote changes delivered to this node: pull (checked, when --check is given), run the hooks,
halt the rollout when it failed here, write the fleet report. The one path that `pull`,
`watch` and a `consul watch` handler share."""

from __future__ import annotations

import time
from contextlib import suppress
from dataclasses import dataclass, field

from fileconsul import fleet, pull, rollout, state, sync
from fileconsul.consul import KVEntry
from fileconsul.errors import (
    CheckRejected,
    ConflictError,
    ConsulUnavailable,
    FileconsulError,
    Interrupted,
)
from fileconsul.history import Head
from fileconsul.hooks import CheckResult, Hooks, run_check, run_hook
from fileconsul.run import Run


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

    outcome: sync.Outcome | None = None
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
    run: Run,
    options: DeliverOptions,
    *,
    entries: list[KVEntry] | None = None,
    head: Head | None = None,
) -> Delivery:
    """Pull (with the values of a consul-watch payload, or the head a watcher was woken
    with), check and run `--exec` when something changed, `--on-failure` when something
    failed; halt the rollout when asked to; then report."""
    delivery = Delivery()
    started = time.monotonic()
    try:
        delivery.outcome = pull.pull(
            run, _pull_options(run, options, delivery), entries=entries, head=head
        )
    except Interrupted:
        raise
    except FileconsulError as exc:
        delivery.error = exc
    delivery.apply_seconds = time.monotonic() - started - delivery.check_seconds
    outcome = delivery.outcome
    root = run.settings.basepath
    exec_cmd = options.hooks.exec_cmd
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
            pull.hooks_done(run)
    if delivery.failed and options.hooks.on_failure:
        _on_failure(run, options.hooks.on_failure, delivery)
    if options.halt_on_failure and delivery.revision and _halting(delivery):
        _halt(run, options, delivery)
    unreachable = isinstance(delivery.error, ConsulUnavailable)
    if options.report and not options.dry_run and not unreachable:
        moved = outcome is not None and (
            delivery.changed or outcome.revision != outcome.previous_revision
        )
        note = fleet.report(run.client, run.prefix, _report(run, options, delivery), moved=moved)
        delivery.notes += [note] if note else []
    return delivery


def _pull_options(run: Run, options: DeliverOptions, delivery: Delivery) -> pull.PullOptions:
    check_cmd = options.hooks.check

    def check(changes: list[tuple[str, str]], revision: int) -> CheckResult:
        assert check_cmd is not None
        started = time.monotonic()
        delivery.check = run_check(
            check_cmd,
            basepath=run.settings.basepath,
            prefix=run.prefix,
            revision=revision,
            changes=changes,
        )
        delivery.check_seconds = time.monotonic() - started
        return delivery.check

    def hold(revision: int) -> str | None:
        if options.rejected is not None and revision == options.rejected:
            return f"revision {revision} was rejected by --check here; waiting for the next one"
        if options.respect_halts:
            found = rollout.halted(run.client, run.prefix, revision)
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


def _on_failure(run: Run, command: str, delivery: Delivery) -> None:
    outcome = delivery.outcome
    if delivery.error is not None:
        reason = str(delivery.error)
    else:
        reason = f"hook exited {delivery.hook_exit}"
    run_hook(
        command,
        basepath=run.settings.basepath,
        prefix=run.prefix,
        revision=delivery.revision or None,
        changes=outcome.for_hooks if outcome else [],
        error=reason,
    )


def _halting(delivery: Delivery) -> bool:
    """A rejection by --check, or a failed --exec: what stops a rollout."""
    return isinstance(delivery.error, CheckRejected) or delivery.hook_exit not in (None, 0)


def _halt(run: Run, options: DeliverOptions, delivery: Delivery) -> None:
    if isinstance(delivery.error, CheckRejected):
        reason = f"--check exited {delivery.error.exit}"
        if delivery.error.output:
            reason += f": {delivery.error.output.splitlines()[-1]}"
    else:
        reason = f"--exec exited {delivery.hook_exit}"
    stop = rollout.Halt(
        delivery.revision, fleet.node_name(run.client, options.node), fleet.now(), reason
    )
    try:
        rollout.halt(run.client, run.prefix, stop)
        delivery.halt, delivery.halted_here = stop, True
    except FileconsulError as exc:
        delivery.notes.append(f"the rollout could not be halted ({exc})")


def _report(run: Run, options: DeliverOptions, delivery: Delivery) -> fleet.Report:
    error = delivery.error
    if isinstance(error, CheckRejected):
        result: fleet.Result = "rejected"
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
            revision = state.load(run.settings.basepath, run.prefix).revision
        except FileconsulError:
            revision = 0
    message = str(error or "") or (outcome.held if outcome and outcome.held else "") or ""
    return fleet.Report(
        node=fleet.node_name(run.client, options.node),
        revision=revision,
        time=fleet.now(),
        result=result,
        message=message,
        applied=len(outcome.actions) if outcome and delivery.changed else 0,
        hook=options.hooks.exec_cmd,
        hook_exit=delivery.hook_exit,
        check_exit=error.exit if isinstance(error, CheckRejected) else None,
        output=error.output if isinstance(error, CheckRejected) else "",
    )


def report_push(run: Run, node: str | None, outcome: sync.Outcome) -> list[str]:
    """After a push that left nothing to pull, this node holds the revision it committed: it
    reports so, as a pull would. Notes on what could not be done."""
    if outcome.dry_run or outcome.left_to_pull or not outcome.revision:
        return []
    new = fleet.Report(fleet.node_name(run.client, node), outcome.revision, fleet.now(), "ok")
    note = fleet.report(run.client, run.prefix, new, moved=outcome.committed is not None)
    return [note] if note else []
