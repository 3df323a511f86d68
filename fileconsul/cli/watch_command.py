"""watch: a node kept in step with Consul as a service, with rollout control, logs and
metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from fileconsul.cli import render
from fileconsul.cli.base import (
    LOG_FORMAT,
    MAX_DELETE,
    METRICS_ADDR,
    NODE,
    cli,
    common_options,
    open_run,
    stack,
)
from fileconsul.cli.events import Events
from fileconsul.cli.key_commands import signed, verifying
from fileconsul.cli.sync_commands import HOOK_OPTIONS, NO_REPORT, deliver_options
from fileconsul.commands import pull, push
from fileconsul.commands.context import Context
from fileconsul.errors import UsageError
from fileconsul.fleet import watch
from fileconsul.fleet.drift import DEFAULT_EVERY
from fileconsul.fleet.hooks import Hooks
from fileconsul.fleet.metrics import Metrics
from fileconsul.store.client import ConsulClient


@cli.command(name="watch")
@common_options
@lambda f: stack(f, HOOK_OPTIONS)
@click.option(
    "--max-parallel",
    type=click.IntRange(min=1),
    metavar="N",
    help="At most N nodes apply a new revision (apply, check, exec) at once, fleet-wide.",
)
@click.option(
    "--halt-on-failure/--no-halt-on-failure",
    default=None,
    help="Halt the rollout of a revision that --check rejects or --exec fails on here: no "
    "watcher applies it [default: on with --max-parallel].",
)
@NO_REPORT
@NODE
@MAX_DELETE
@click.option(
    "--stale/--consistent",
    default=True,
    help="Let any Consul server answer (the default: it spreads the load over the servers; a "
    "value not yet on that server is read again from the leader), or only the leader.",
)
@click.option(
    "--random-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="SECONDS",
    help="Wait a random time up to SECONDS after a change before fetching it.",
)
@click.option("--once", is_flag=True, help="Apply what is pending, then exit as pull does.")
@click.option(
    "--push",
    "push_local",
    is_flag=True,
    help="Also push local changes, after a quiet period; conflicts are reported, never forced.",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=1, max=600),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest blocking query to Consul: an idle watcher asks once per SECONDS (changes, "
    "other tools' writes included, arrive at once).",
)
@click.option(
    "--drift-scan",
    type=click.FloatRange(min=0),
    default=DEFAULT_EVERY,
    show_default=True,
    metavar="SECONDS",
    help="Scan the tree every SECONDS for managed files changed here by hand (drift), and "
    "report them; 0: never. Off with --push, which pushes local changes instead.",
)
@click.option(
    "--heal",
    is_flag=True,
    help="Put a drifted file back to its committed version (through --check and --exec, "
    "like any apply), and log it.",
)
@verifying
@LOG_FORMAT
@METRICS_ADDR
@click.pass_context
def watch_command(
    ctx: click.Context,
    exec_cmd: str | None,
    on_failure: str | None,
    check_cmd: str | None,
    hook_timeout: float,
    max_parallel: int | None,
    halt_on_failure: bool | None,
    no_report: bool,
    node: str | None,
    max_delete: int | None,
    stale: bool,
    random_delay: float,
    once: bool,
    push_local: bool,
    wait: float,
    drift_scan: float,
    heal: bool,
    trusted_keys: Path | None,
    max_age: float | None,
    log_format: str,
    metrics_addr: str | None,
) -> None:
    """Apply every remote change as it happens (and, with --push, push local ones).

    Stops cleanly on SIGTERM or SIGINT, between applies (exit 0).

    \b
    Examples:
      fileconsul watch --basepath /etc/consul-share --exec 'systemctl reload consul'
      fileconsul watch --check 'nginx -t' --max-parallel 2 --metrics-addr 127.0.0.1:9135
      fileconsul watch --drift-scan 10 --heal --exec 'systemctl reload nginx'
      fileconsul watch --trusted-keys /etc/fileconsul/trusted/ --max-age 86400
    """
    if heal and (push_local or not drift_scan):
        raise UsageError("--heal needs the scan for drift: not with --push or --drift-scan 0")
    halt = halt_on_failure if halt_on_failure is not None else max_parallel is not None
    hooks = Hooks(exec_cmd, on_failure, check_cmd, hook_timeout)
    json_output = log_format == "json"
    options = watch.WatchOptions(
        deliver_options(hooks, no_report, node, max_delete, halt=halt, json_output=json_output),
        random_delay=random_delay,
        once=once,
        wait=wait,
        max_parallel=max_parallel,
        drift_every=0.0 if push_local else drift_scan,
        heal=heal,
    )
    stopper = watch.Stopper()
    stopper.install()
    metrics = Metrics(metrics_addr)
    try:
        with open_run(ctx, stale=stale) as (run, out):
            run = signed(run, trusted_keys=trusted_keys, max_age=max_age)
            tell = Events("json" if json_output else "text", quiet=out.quiet)
            with _local_pusher(run, tell, push_local):
                _start_line(run, tell, options)
                code = watch.watch(run, options, stopper, tell, metrics)
    finally:
        stopper.restore()
        metrics.close()
    ctx.exit(code)


def _start_line(run: Context, tell: Events, options: watch.WatchOptions) -> None:
    revision = pull.local_revision(run)
    keys = run.trust.fingerprints if run.trust else None
    verifying = f"; applying only what {keys} signed" if keys else ""
    tell(
        "start",
        f"watching {run.prefix} on {run.settings.consul.where} into {run.settings.basepath}, "
        f"at revision {revision}{verifying}",
        trusted_keys=keys,
        addr=run.settings.consul.where,
        prefix=run.prefix,
        basepath=str(run.settings.basepath),
        revision=revision,
        max_parallel=options.max_parallel,
    )


@contextmanager
def _local_pusher(run: Context, tell: Events, enabled: bool) -> Iterator[None]:
    """With `enabled`, push local changes from a thread of its own, on a client of its own;
    each push is an event like the watch's others."""
    if not enabled:
        yield
        return
    from fileconsul.fleet.autopush import LocalPusher

    with ConsulClient(run.settings.consul) as client:
        push_run = Context(run.settings, client, run.lock_wait)

        def push_once() -> None:
            outcome = push.push(push_run)
            for warning in outcome.warnings:
                tell("warning", warning, level="warning")
            if outcome.actions:
                paths = [a.path for a in outcome.actions]
                text = render.outcome_text("push", outcome).splitlines()[-1]
                tell("push", text, revision=outcome.revision, paths=paths)

        def failed(text: str) -> None:
            tell("error", text, level="error")

        pusher = LocalPusher(run.settings.basepath, push_once, failed)
        pusher.start()
        try:
            yield
        finally:
            pusher.stop()
