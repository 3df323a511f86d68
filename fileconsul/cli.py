"""The command line: click commands that build settings, run the library and render results.

The connection and path options are accepted before or after the command name; they land in
one `Common` object on the click context, the command's own options in its typed options.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from fileconsul import __version__, config, deliver, fleet, handler, history, render, sync, watch
from fileconsul.consul import ConsulClient
from fileconsul.errors import EXIT_CHANGES, EXIT_INTERNAL, FileconsulError, Interrupted
from fileconsul.hooks import Hooks
from fileconsul.run import Run, Step

F = TypeVar("F", bound=Callable[..., Any])
#: Pushes and pulls of fewer files finish before a bar would be worth drawing.
PROGRESS_MIN = 100


class Group(click.Group):
    """Turns fileconsul's errors into one line on stderr and their exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FileconsulError as exc:
            click.echo(f"fileconsul: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("fileconsul: interrupted", err=True)
            ctx.exit(Interrupted.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:
            click.echo(
                f"fileconsul: internal error ({exc.__class__.__name__}: {exc}); this is a bug, "
                "please report it with the command line that caused it",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


# -- options shared by every command, before or after its name ---------------------------


@dataclass
class Common:
    """The connection and path options, wherever they were given (the command's win)."""

    addr: str | None = None
    dc: str | None = None
    prefix: str | None = None
    basepath: str | None = None
    token: str | None = None
    lock_wait: float = 30.0
    quiet: bool = False
    verbose: bool = False

    def settings(self) -> config.Settings:
        return config.settings(
            addr=self.addr,
            token=self.token,
            dc=self.dc,
            prefix=self.prefix,
            basepath=self.basepath,
        )


def _store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None and value is not False and param.name:
        setattr(ctx.ensure_object(Common), param.name, value)


def _common(*decls: str, **kw: Any) -> Callable[[F], F]:
    return click.option(*decls, expose_value=False, callback=_store, **kw)


COMMON_OPTIONS = [
    _common(
        "--addr",
        "-addr",
        metavar="ADDR",
        help="Consul HTTP address: HOST:PORT, http(s)://HOST:PORT or unix:///path "
        "[env: CONSUL_HTTP_ADDR; default 127.0.0.1:8500].",
    ),
    _common("--dc", "-dc", metavar="DC", help="Consul datacenter [default: the agent's own]."),
    _common(
        "--prefix",
        "-prefix",
        metavar="PREFIX",
        help="KV prefix the tree lives under [env: FILECONSUL_PREFIX; default fileconsul].",
    ),
    _common(
        "--basepath",
        "-basepath",
        metavar="DIR",
        help="Local directory that is shared [env: FILECONSUL_BASEPATH; default .].",
    ),
    _common(
        "--token",
        metavar="TOKEN",
        help="ACL token, sent as X-Consul-Token [env: CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE].",
    ),
    _common(
        "--lock-wait",
        type=click.FloatRange(min=0),
        metavar="SECONDS",
        help="Seconds to wait for another node's push to finish [default: 30].",
    ),
    _common("-q", "--quiet", is_flag=True, help="Print nothing but errors."),
    _common("-v", "--verbose", is_flag=True, help="Also print request counts and bytes received."),
]


def _stack(func: F, options: list[Callable[[Any], Any]]) -> F:
    """Apply click option decorators in the order they are listed (as --help shows them)."""
    for option in reversed(options):
        func = option(func)
    return func


def common_options(func: F) -> F:
    return _stack(func, COMMON_OPTIONS)


def hook_options(func: F) -> F:
    return _stack(func, HOOK_OPTIONS)


MAX_DELETE = click.option(
    "--max-delete",
    type=click.IntRange(min=0),
    metavar="N",
    help="Allow up to N deletions [default: half of the tracked files].",
)
DRY_RUN = click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
FORCE = click.option(
    "--force", is_flag=True, help="Resolve conflicts for this side and lift the delete cap."
)
NODE = click.option(
    "--node", metavar="NAME", help="Node name in the fleet report [default: the agent's node name]."
)
NO_REPORT = click.option(
    "--no-report",
    is_flag=True,
    help="Do not write this node's fleet report (<prefix>.nodes/<node>).",
)
HOOK_OPTIONS = [
    click.option(
        "--exec",
        "exec_cmd",
        metavar="CMD",
        help="Run CMD through the shell after changes were applied; the changed paths are in "
        "$FILECONSUL_CHANGED and, as JSON, on its stdin.",
    ),
    click.option(
        "--on-failure",
        metavar="CMD",
        help="Run CMD when applying or the --exec hook failed ($FILECONSUL_ERROR says why).",
    ),
]


# -- output ----------------------------------------------------------------------------------


class Output:
    def __init__(self, common: Common) -> None:
        self.quiet, self.verbose = common.quiet, common.verbose

    def out(self, text: str) -> None:
        if not self.quiet and text:
            click.echo(text)

    def warn(self, text: str) -> None:
        if not self.quiet:
            click.echo(f"fileconsul: warning: {text}", err=True)

    def error(self, text: str) -> None:
        click.echo(f"fileconsul: {text}", err=True)

    def debug(self, text: str) -> None:
        if self.verbose:
            click.echo(f"fileconsul: {text}", err=True)

    @contextmanager
    def _bar(self, label: str, total: int) -> Iterator[Step]:
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            yield bar.update

    def progress(self, label: str, total: int) -> AbstractContextManager[Step]:
        """A progress bar on a terminal for long pushes and pulls; nothing otherwise."""
        if self.quiet or total < PROGRESS_MIN or not sys.stderr.isatty():
            return nullcontext(lambda count: None)
        return self._bar(label, total)


@contextmanager
def open_run(ctx: click.Context, *, stale: bool = False) -> Iterator[tuple[Run, Output]]:
    """The command's Run (settings, one Consul client) and its output, from the context."""
    common = ctx.ensure_object(Common)
    out = Output(common)
    settings = common.settings()
    for warning in settings.warnings:
        out.warn(warning)
    with ConsulClient(settings.consul) as client:
        yield Run(settings, client, common.lock_wait, stale, out.progress), out
        out.debug(f"{client.requests} requests, {client.bytes_received} bytes received")


# -- commands --------------------------------------------------------------------------------


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fileconsul")
@common_options
def cli() -> None:
    """Share a directory tree across a Consul cluster through its key/value store.

    \b
    On one node:    fileconsul push --basepath /etc/consul-share
    On the others:  fileconsul pull --basepath /etc/consul-share
    """


@cli.command()
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option(
    "--fleet",
    "show_fleet",
    is_flag=True,
    help="List every node's last applied revision: current, lagging or failed.",
)
@click.pass_context
def status(ctx: click.Context, as_json: bool, show_fleet: bool) -> None:
    """Show what push and pull would change, and any conflicts.

    Exits 0 when in sync, 1 when there is anything to push, pull or resolve. With --fleet,
    exits 1 when any node is not current.

    \b
    Examples:
      fileconsul status --basepath /etc/consul-share
      fileconsul status --fleet --json
    """
    if show_fleet:
        with open_run(ctx) as (run, out):
            revision, nodes = fleet.read(run.client, run.prefix)
        if as_json:
            click.echo(json.dumps(render.fleet_json(run.prefix, revision, nodes), indent=2))
        else:
            out.out(render.fleet_text(revision, nodes))
        ctx.exit(0 if nodes and all(n.state == "current" for n in nodes) else EXIT_CHANGES)
    with open_run(ctx) as (run, out):
        result = sync.status(run)
    for warning in result.warnings:
        out.warn(warning)
    out.debug("remote read from the manifest alone" if result.remote.fast else "remote values read")
    if as_json:
        click.echo(json.dumps(render.status_json(result.prefix, result.plan), indent=2))
    else:
        out.out(render.status_text(result.plan))
    ctx.exit(0 if result.in_sync else EXIT_CHANGES)


@cli.command()
@common_options
@click.option("-m", "--message", default="", metavar="TEXT", help="Why: kept in the commit record.")
@DRY_RUN
@FORCE
@MAX_DELETE
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    metavar="N",
    help="Keep the last N revisions from now on, for every pusher of the prefix "
    f"[default: as before, else {history.DEFAULT_KEEP}].",
)
@NO_REPORT
@NODE
@click.pass_context
def push(
    ctx: click.Context,
    message: str,
    dry_run: bool,
    force: bool,
    max_delete: int | None,
    keep: int | None,
    no_report: bool,
    node: str | None,
) -> None:
    """Send local changes to Consul as one commit: a new revision.

    When nothing is left to pull afterwards, the node's fleet report says it holds the new
    revision.

    \b
    Examples:
      fileconsul push --dry-run
      fileconsul push -m "raise the ntp poll interval"
    """
    options = sync.PushOptions(force, dry_run, max_delete, message, keep, node)
    with open_run(ctx) as (run, out):
        outcome = sync.push(run, options)
        if not no_report:
            outcome.warnings += deliver.report_push(run, node, outcome)
    _print_outcome(out, "push", outcome)
    ctx.exit(outcome.exit_code)


@cli.command()
@common_options
@DRY_RUN
@FORCE
@MAX_DELETE
@hook_options
@NO_REPORT
@NODE
@click.option(
    "--strict",
    is_flag=True,
    help="As a consul watch handler, exit non-zero on errors (consul watch then stops).",
)
@click.pass_context
def pull(
    ctx: click.Context,
    dry_run: bool,
    force: bool,
    max_delete: int | None,
    exec_cmd: str | None,
    on_failure: str | None,
    no_report: bool,
    node: str | None,
    strict: bool,
) -> None:
    """Apply remote changes to the local tree, verified and atomically.

    Run by `consul watch` (CONSUL_INDEX is set), it reads the watch's JSON from stdin, uses a
    keyprefix payload as the tree, and exits 0 even on errors unless --strict.

    \b
    Examples:
      fileconsul pull --basepath /etc/consul-share --exec 'systemctl reload consul'
      consul watch -type keyprefix -prefix fileconsul/ fileconsul pull
    """
    as_handler = "CONSUL_INDEX" in os.environ
    options = deliver.DeliverOptions(
        hooks=Hooks(exec_cmd, on_failure),
        report=not no_report,
        node=node,
        force=force,
        dry_run=dry_run,
        max_delete=max_delete,
    )
    code = 0
    try:
        with open_run(ctx) as (run, out):
            entries = handler.parse_payload(sys.stdin.read(), run.prefix) if as_handler else None
            delivery = deliver.deliver(run, options, entries=entries)
        code = _print_delivery(out, delivery)
    except FileconsulError as exc:
        if not as_handler or strict:
            raise
        click.echo(f"fileconsul: {exc}", err=True)
    ctx.exit(0 if as_handler and not strict else code)


@cli.command(name="watch")
@common_options
@hook_options
@NO_REPORT
@NODE
@MAX_DELETE
@click.option("--stale", is_flag=True, help="Let any Consul server answer, to spread the load.")
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
    help="Longest blocking query to Consul.",
)
@click.pass_context
def watch_command(
    ctx: click.Context,
    exec_cmd: str | None,
    on_failure: str | None,
    no_report: bool,
    node: str | None,
    max_delete: int | None,
    stale: bool,
    random_delay: float,
    once: bool,
    push_local: bool,
    wait: float,
) -> None:
    """Apply every remote change as it happens (and, with --push, push local ones).

    Stops cleanly on SIGTERM or SIGINT, between applies (exit 0).

    \b
    Examples:
      fileconsul watch --basepath /etc/consul-share --exec 'systemctl reload consul'
      fileconsul watch --push --random-delay 2
    """
    options = watch.WatchOptions(
        deliver.DeliverOptions(
            hooks=Hooks(exec_cmd, on_failure),
            report=not no_report,
            node=node,
            max_delete=max_delete,
        ),
        random_delay=random_delay,
        once=once,
        wait=wait,
    )
    stopper = watch.Stopper()
    stopper.install()
    try:
        with open_run(ctx, stale=stale) as (run, out), _local_pusher(run, out, push_local):
            code = watch.watch(
                run, options, stopper, lambda d: _print_delivery(out, d, quiet_noop=True), out.warn
            )
    finally:
        stopper.restore()
    ctx.exit(code)


@contextmanager
def _local_pusher(run: Run, out: Output, enabled: bool) -> Iterator[None]:
    """With `enabled`, push local changes from a thread of its own, on a client of its own."""
    if not enabled:
        yield
        return
    from fileconsul.pusher import LocalPusher

    with ConsulClient(run.settings.consul) as client:
        push_run = Run(run.settings, client, run.lock_wait)

        def push_once() -> None:
            outcome = sync.push(push_run)
            if outcome.actions:
                _print_outcome(out, "push", outcome)

        pusher = LocalPusher(run.settings.basepath, push_once, out.warn)
        pusher.start()
        try:
            yield
        finally:
            pusher.stop()


def _print_delivery(out: Output, delivery: deliver.Delivery, *, quiet_noop: bool = False) -> int:
    """Print what a delivery did (a watch stays silent when it did nothing); its exit code."""
    outcome = delivery.outcome
    if outcome is not None and (outcome.actions or outcome.skipped or not quiet_noop):
        _print_outcome(out, "pull", outcome)
    for note in delivery.notes:
        out.warn(note)
    if delivery.error is not None:
        out.error(str(delivery.error))
    return delivery.exit_code


def _print_outcome(out: Output, command: str, outcome: sync.Outcome) -> None:
    for warning in outcome.warnings:
        out.warn(warning)
    out.out(render.outcome_text(command, outcome))
    for path, why in outcome.skipped:
        out.error(f"skipped {path!r}: {why}")


def main() -> None:
    sys.exit(cli.main(prog_name="fileconsul"))
