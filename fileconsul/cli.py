"""The command line: click commands that build settings, run the library and render results."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

import click

from fileconsul import __version__, config, render, sync
from fileconsul import fleet as fleet_mod
from fileconsul import watch as watch_mod
from fileconsul.consul import ConsulClient
from fileconsul.errors import EXIT_CHANGES, EXIT_INTERNAL, FileconsulError, Interrupted

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


def _stack(func: F, options: Sequence[Callable[[Any], Any]]) -> F:
    """Apply click option decorators in the order they are listed (as --help shows them)."""
    for option in reversed(options):
        func = option(func)
    return func


MAX_DELETE = click.option(
    "--max-delete",
    type=click.IntRange(min=0),
    metavar="N",
    help="Allow up to N deletions [default: half of the tracked files].",
)


def connection_options(func: F) -> F:
    """The original tool's flags (also spelled with one dash), and Consul's token."""
    options = [
        click.option(
            "--addr",
            "-addr",
            metavar="ADDR",
            help="Consul HTTP address: HOST:PORT, http(s)://HOST:PORT or unix:///path "
            "[env: CONSUL_HTTP_ADDR; default 127.0.0.1:8500].",
        ),
        click.option(
            "--dc", "-dc", metavar="DC", help="Consul datacenter [default: the agent's own]."
        ),
        click.option(
            "--prefix",
            "-prefix",
            default=config.DEFAULT_PREFIX,
            show_default=True,
            envvar="FILECONSUL_PREFIX",
            help="KV prefix the tree lives under [env: FILECONSUL_PREFIX].",
        ),
        click.option(
            "--basepath",
            "-basepath",
            default=".",
            show_default=True,
            envvar="FILECONSUL_BASEPATH",
            type=click.Path(file_okay=False),
            help="Local directory that is shared [env: FILECONSUL_BASEPATH].",
        ),
        click.option(
            "--token",
            metavar="TOKEN",
            help="ACL token, sent as X-Consul-Token [env: CONSUL_HTTP_TOKEN, "
            "CONSUL_HTTP_TOKEN_FILE].",
        ),
        click.option(
            "--lock-wait",
            type=click.FloatRange(min=0),
            default=30.0,
            show_default=True,
            help="Seconds to wait for another node's push to finish.",
        ),
        click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors."),
        click.option(
            "-v", "--verbose", is_flag=True, help="Also print warnings' details and traffic."
        ),
    ]
    return _stack(func, options)


def change_options(func: F) -> F:
    options = [
        click.option("--dry-run", is_flag=True, help="Show what would change; change nothing."),
        click.option(
            "--force",
            is_flag=True,
            help="Resolve conflicts for this side and lift the delete cap.",
        ),
        MAX_DELETE,
    ]
    return _stack(func, options)


def apply_options(func: F) -> F:
    """What happens around an apply: hooks and the fleet report (pull and watch)."""
    options = [
        click.option(
            "--exec",
            "exec_cmd",
            metavar="CMD",
            help="Run CMD through the shell after changes were applied; the changed paths "
            "are in $FILECONSUL_CHANGED and, as JSON, on its stdin.",
        ),
        click.option(
            "--on-failure",
            metavar="CMD",
            help="Run CMD when applying or the --exec hook failed ($FILECONSUL_ERROR says why).",
        ),
    ]
    return report_options(_stack(func, options))


def report_options(func: F) -> F:
    """The fleet report (<prefix>.nodes/<node>) written after a pull, an apply or a push."""
    func = click.option(
        "--node",
        metavar="NAME",
        help="Node name in the fleet report [default: the agent's node name].",
    )(func)
    return click.option(
        "--no-report",
        is_flag=True,
        help="Do not write this node's fleet report (<prefix>.nodes/<node>).",
    )(func)


class Output:
    def __init__(self, quiet: bool, verbose: bool) -> None:
        self.quiet, self.verbose = quiet, verbose

    def out(self, text: str) -> None:
        if not self.quiet and text:
            click.echo(text)

    def warn(self, text: str) -> None:
        if not self.quiet:
            click.echo(f"fileconsul: warning: {text}", err=True)

    @contextmanager
    def _bar(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            yield bar.update

    def progress(self, label: str, total: int) -> AbstractContextManager[Callable[[int], None]]:
        """A progress bar on a terminal for long pushes and pulls; nothing otherwise."""
        if self.quiet or total < PROGRESS_MIN or not sys.stderr.isatty():
            return nullcontext(lambda count: None)
        return self._bar(label, total)

    def debug(self, text: str) -> None:
        if self.verbose:
            click.echo(f"fileconsul: {text}", err=True)


@contextmanager
def open_run(
    out: Output,
    *,
    addr: str | None,
    dc: str | None,
    prefix: str,
    basepath: str,
    token: str | None,
    lock_wait: float,
    **_: Any,
) -> Iterator[sync.Run]:
    settings = config.settings(addr=addr, token=token, dc=dc, prefix=prefix, basepath=basepath)
    for warning in settings.warnings:
        out.warn(warning)
    with ConsulClient(settings.consul) as client:
        yield sync.Run(settings, client, lock_wait=lock_wait, progress=out.progress)
        out.debug(f"{client.requests} requests, {client.bytes_received} bytes received")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fileconsul")
def cli() -> None:
    """Share a directory tree across a Consul cluster through its key/value store."""


@cli.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option(
    "--fleet",
    is_flag=True,
    help="List every node's last applied revision: current, lagging or failed.",
)
@click.pass_context
def status(
    ctx: click.Context, /, as_json: bool, fleet: bool, quiet: bool, verbose: bool, **kw: Any
) -> None:
    """Show what push and pull would change, and any conflicts.

    Exits 0 when in sync, 1 when there is anything to push, pull or resolve. With --fleet,
    exits 1 when any node is not current.
    """
    out = Output(quiet, verbose)
    if fleet:
        with open_run(out, **kw) as run:
            revision, nodes = fleet_mod.read(run.client, run.prefix)
        if as_json:
            click.echo(json.dumps(render.fleet_json(run.prefix, revision, nodes), indent=2))
        else:
            out.out(render.fleet_text(revision, nodes))
        ctx.exit(0 if nodes and all(n.state == "current" for n in nodes) else EXIT_CHANGES)
    with open_run(out, **kw) as run:
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
@connection_options
@change_options
@report_options
@click.pass_context
def push(
    ctx: click.Context,
    /,
    quiet: bool,
    verbose: bool,
    dry_run: bool,
    force: bool,
    max_delete: int | None,
    no_report: bool,
    node: str | None,
    **kw: Any,
) -> None:
    """Send local changes to Consul as one commit.

    When nothing is left to pull afterwards, the node's fleet report says it holds the new
    revision.
    """
    out = Output(quiet, verbose)
    with open_run(out, **kw) as run:
        outcome = sync.push(run, force=force, dry_run=dry_run, max_delete=max_delete)
        if not no_report:
            outcome.warnings += watch_mod.report_push(run, node, outcome)
    _finish(ctx, out, "push", outcome)


@cli.command()
@connection_options
@change_options
@apply_options
@click.option(
    "--strict",
    is_flag=True,
    help="As a consul watch handler, exit non-zero on errors (consul watch then stops).",
)
@click.pass_context
def pull(
    ctx: click.Context,
    /,
    quiet: bool,
    verbose: bool,
    dry_run: bool,
    force: bool,
    max_delete: int | None,
    exec_cmd: str | None,
    on_failure: str | None,
    no_report: bool,
    node: str | None,
    strict: bool,
    **kw: Any,
) -> None:
    """Apply remote changes to the local tree, verified and atomically.

    Run by `consul watch` (CONSUL_INDEX is set), it reads the watch's JSON from stdin, uses a
    keyprefix payload as the tree, and exits 0 even on errors unless --strict.
    """
    out = Output(quiet, verbose)
    handler = "CONSUL_INDEX" in os.environ
    options = watch_mod.ApplyOptions(
        watch_mod.Hooks(exec_cmd, on_failure), not no_report, node, force, dry_run, max_delete
    )
    try:
        with open_run(out, **kw) as run:
            entries = None
            if handler:
                entries = watch_mod.parse_payload(sys.stdin.read(), run.prefix)
            applied = watch_mod.apply_remote(run, options, entries=entries)
        code = _report_apply(out, applied)
    except FileconsulError as exc:
        if not handler or strict:
            raise
        click.echo(f"fileconsul: {exc}", err=True)
        code = exc.exit_code
    if handler and not strict:
        code = 0
    ctx.exit(code)


def _report_apply(out: Output, applied: watch_mod.Applied, *, quiet_noop: bool = False) -> int:
    """Print what an apply did (a watch stays silent when it did nothing); its exit code."""
    outcome = applied.outcome
    if outcome is not None and (outcome.actions or outcome.skipped or not quiet_noop):
        _print_outcome(out, "pull", outcome)
    for note in applied.notes:
        out.warn(note)
    if applied.error is not None:
        click.echo(f"fileconsul: {applied.error}", err=True)
    return applied.exit_code


@cli.command()
@connection_options
@apply_options
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
def watch(
    ctx: click.Context,
    /,
    quiet: bool,
    verbose: bool,
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
    **kw: Any,
) -> None:
    """Apply every remote change as it happens (and, with --push, push local ones).

    Stops cleanly on SIGTERM or SIGINT, between applies (exit 0).
    """
    out = Output(quiet, verbose)
    options = watch_mod.WatchOptions(
        watch_mod.ApplyOptions(
            watch_mod.Hooks(exec_cmd, on_failure), not no_report, node, max_delete=max_delete
        ),
        random_delay=random_delay,
        once=once,
        wait=wait,
    )
    stopper = watch_mod.Stopper()
    stopper.install()
    pusher = None
    try:
        with open_run(out, **kw) as run:
            run.stale = stale
            if push_local:
                pusher = _start_pusher(run, out)
            code = watch_mod.watch(
                run, options, stopper, lambda a: _report_apply(out, a, quiet_noop=True), out.warn
            )
    finally:
        if pusher is not None:
            pusher.stop()
        stopper.restore()
    ctx.exit(code)


def _start_pusher(run: sync.Run, out: Output) -> watch_mod.LocalPusher:
    push_run = sync.Run(run.settings, watch_mod.client_for(run), lock_wait=run.lock_wait)

    def push_once() -> None:
        outcome = sync.push(push_run)
        if outcome.actions:
            _print_outcome(out, "push", outcome)

    pusher = watch_mod.LocalPusher(run.settings.basepath, push_once, out.warn)
    pusher.start()
    return pusher


def _finish(ctx: click.Context, out: Output, command: str, outcome: sync.Outcome) -> None:
    _print_outcome(out, command, outcome)
    ctx.exit(outcome.exit_code)


def _print_outcome(out: Output, command: str, outcome: sync.Outcome) -> None:
    for warning in outcome.warnings:
        out.warn(warning)
    out.out(render.outcome_text(command, outcome))
    for path, why in outcome.skipped:
        click.echo(f"fileconsul: skipped {path!r}: {why}", err=True)


def main() -> None:
    sys.exit(cli.main(prog_name="fileconsul"))
