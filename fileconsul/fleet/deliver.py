"""Remote changes delivered to this node: pull (checked, when --check is given), run the hooks,
halt the rollout when it failed here, write the fleet report. The one path that `pull`,
`watch` and a `consul watch` handler share."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, field, replace
from typing import IO

from fileconsul.commands import pull, trust
from fileconsul.commands.context import Context
from fileconsul.commands.outcome import Outcome
from fileconsul.commands.pull import CheckResult
from fileconsul.errors import (
    CheckRejected,
    ConflictError,
    ConsulUnavailable,
    FileconsulError,
    HookFailed,
    Interrupted,
    Untrusted,
)
from fileconsul.fleet import reports, rollout
from fileconsul.fleet.hooks import Call, Hooks, run, tail
from fileconsul.local import record as records
from fileconsul.model.records import Head
from fileconsul.model.tree import KVEntry

#: Holds one of the fleet's slots while a change is applied (its check and hook included).
Gate = Callable[[], AbstractContextManager[None]]
#: Characters of a reason or message kept in a halt or a fleet report: both always fit a
#: Consul value, whatever a command printed or an error said.
_REASON_CHARS = 1000


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
    #: Where what --exec and --on-failure print goes as they print it (None: nowhere; the
    #: last lines are kept either way).
    echo: IO[bytes] | None = None
    #: Managed paths changed here by hand (drift), for the report; and those to put back to
    #: their committed version (see pull.PullOptions.restore).
    drifted: tuple[str, ...] = ()
    restore: frozenset[str] = frozenset()


@dataclass
class Delivery:
    """What one delivery did: the pull's outcome or its error, the hooks' results, the halt
    that held it or that it made, and notes on what could not be done around it."""

    outcome: Outcome | None = None
    error: FileconsulError | None = None
    #: The --exec command that ran, and its exit status and last lines.
    hook: str | None = None
    hook_result: CheckResult | None = None
    #: The --check command's result, when it ran.
    check: CheckResult | None = None
    check_seconds: float = 0.0
    apply_seconds: float = 0.0
    #: The halt that kept this node from applying, or the one it made.
    halt: rollout.Halt | None = None
    halted_here: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def hook_exit(self) -> int | None:
        return None if self.hook_result is None else self.hook_result.exit

    @property
    def hook_failed(self) -> bool:
        return self.hook_exit not in (None, 0)

    @property
    def exit_code(self) -> int:
        """The error's code; else 5 when paths were skipped; else 9 when --exec failed (the
        change stands); else 0."""
        if self.error is not None:
            return self.error.exit_code
        code = self.outcome.exit_code if self.outcome else 0
        if code == 0 and self.hook_failed:
            return HookFailed.exit_code
        return code

    @property
    def failed(self) -> bool:
        return self.error is not None or self.hook_failed

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
    gate: Gate | None = None,
) -> Delivery:
    """Pull (with the values of a consul-watch payload, or the head a watcher was woken
    with), check and run `--exec` when something changed, `--on-failure` when something
    failed; halt the rollout when asked to; then report. With a `gate` (a fleet slot), the
    pull is first planned: the gate is entered only when it has something to apply."""
    if gate is not None and not options.dry_run:
        quiet = replace(options, dry_run=True, report=False, hooks=Hooks(), halt_on_failure=False)
        preview = _delivered(ctx, quiet, entries, head)
        outcome = preview.outcome
        if preview.error is None and outcome is not None and outcome.actions and not outcome.held:
            with gate():
                return _delivered(ctx, options, entries, head)
    return _delivered(ctx, options, entries, head)


def _delivered(
    ctx: Context,
    options: DeliverOptions,
    entries: Sequence[KVEntry] | None,
    head: Head | None,
) -> Delivery:
    delivery = Delivery()
    started = time.monotonic()
    try:
        delivery.outcome = pull.pull(
            ctx, _pull_options(ctx, options, delivery), entries=entries, head=head
        )
    except Interrupted:
        raise
    except FileconsulError as exc:
        delivery.error = trust.as_untrusted(ctx, exc)
    delivery.apply_seconds = time.monotonic() - started - delivery.check_seconds
    outcome = delivery.outcome
    exec_cmd = options.hooks.exec_cmd
    if exec_cmd and outcome is not None and not outcome.dry_run and outcome.for_hooks:
        call = Call(ctx.basepath, ctx.prefix, outcome.revision, outcome.for_hooks)
        delivery.hook_result = run(exec_cmd, call, timeout=options.hooks.timeout, echo=options.echo)
        delivery.hook = exec_cmd
        with suppress(FileconsulError):
            pull.hooks_done(ctx)
    if delivery.failed and options.hooks.on_failure:
        _on_failure(ctx, options, delivery)
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
        call = Call(ctx.basepath, ctx.prefix, revision, changes)
        delivery.check = run(check_cmd, call, timeout=options.hooks.timeout)
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
        restore=options.restore,
    )


def _on_failure(ctx: Context, options: DeliverOptions, delivery: Delivery) -> None:
    assert options.hooks.on_failure is not None
    outcome = delivery.outcome
    if delivery.error is not None:
        reason = str(delivery.error)
    else:
        reason = f"hook exited {delivery.hook_exit}"
    call = Call(
        ctx.basepath,
        ctx.prefix,
        delivery.revision or None,
        outcome.for_hooks if outcome else [],
        error=reason,
    )
    run(options.hooks.on_failure, call, timeout=options.hooks.timeout, echo=options.echo)


def _halting(delivery: Delivery) -> bool:
    """A rejection by --check, or a failed --exec: what stops a rollout."""
    return isinstance(delivery.error, CheckRejected) or delivery.hook_failed


def _halt(ctx: Context, options: DeliverOptions, delivery: Delivery) -> None:
    if isinstance(delivery.error, CheckRejected):
        reason = f"--check exited {delivery.error.exit}"
        if delivery.error.output:
            reason += f": {tail(delivery.error.output, lines=1)}"
    else:
        reason = f"--exec exited {delivery.hook_exit}"
    stop = rollout.Halt(
        delivery.revision,
        ctx.client.node_name(options.node),
        reports.now(),
        _clip(reason),
    )
    try:
        rollout.halt(ctx.client, ctx.prefix, stop)
        delivery.halt, delivery.halted_here = stop, True
    except FileconsulError as exc:
        delivery.notes.append(f"the rollout could not be halted ({exc})")


def _report(ctx: Context, options: DeliverOptions, delivery: Delivery) -> reports.Report:
    error, outcome = delivery.error, delivery.outcome
    result = _result(delivery)
    if isinstance(error, CheckRejected):
        revision = error.revision
    elif outcome is not None:
        revision = outcome.revision if not outcome.held else outcome.previous_revision
    else:
        try:
            revision = records.load(ctx.basepath, ctx.prefix, cache=False).revision
        except FileconsulError:
            revision = 0
    if error is not None:
        message = str(error)
    elif outcome is not None and outcome.held:
        message = outcome.held
    elif outcome is not None and outcome.skipped:
        shown = "; ".join(f"{path} ({why})" for path, why in outcome.skipped[:5])
        message = f"skipped {len(outcome.skipped)} paths: {shown}"
    else:
        message = ""
    check = error if isinstance(error, CheckRejected) else None
    return reports.Report(
        node=ctx.client.node_name(options.node),
        revision=revision,
        time=reports.now(),
        result=result,
        message=_clip(message),
        applied=len(outcome.actions) if outcome and delivery.changed else 0,
        hook=options.hooks.exec_cmd,
        hook_exit=delivery.hook_exit,
        check_exit=check.exit if check else None,
        output=tail(check.output) if check else "",
        drifted=options.drifted[: reports.DRIFT_LISTED],
        drift_count=len(options.drifted),
        signer=outcome.signer if outcome else "",
        signed_at=outcome.signed_at if outcome else "",
    )


def _result(delivery: Delivery) -> reports.Result:
    error, outcome = delivery.error, delivery.outcome
    if isinstance(error, CheckRejected):
        return "rejected"
    if isinstance(error, Untrusted):
        return "untrusted"
    if outcome is not None and outcome.held and delivery.halt is not None:
        return "halted"
    if isinstance(error, ConflictError):
        return "conflict"
    if delivery.failed:
        return "error"
    if outcome is not None and outcome.skipped:
        return "skipped"
    return "ok"


def _clip(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def report_push(ctx: Context, node: str | None, outcome: Outcome) -> list[str]:
    """After a push that left nothing to pull, this node holds the revision it committed: it
    reports so, as a pull would. Notes on what could not be done."""
    if outcome.dry_run or outcome.left_to_pull or not outcome.revision:
        return []
    new = reports.Report(ctx.client.node_name(node), outcome.revision, reports.now(), "ok")
    note = reports.report(ctx.client, ctx.prefix, new, moved=outcome.committed is not None)
    return [note] if note else []
