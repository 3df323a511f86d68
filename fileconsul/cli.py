"""The command line: click commands that build settings, run the library and render results."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from fileconsul import __version__, config, render, sync
from fileconsul.consul import ConsulClient
from fileconsul.errors import EXIT_CHANGES, FileconsulError, Interrupted

F = TypeVar("F", bound=Callable[..., Any])


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
    for option in reversed(options):
        func = option(func)
    return func


def change_options(func: F) -> F:
    options = [
        click.option("--dry-run", is_flag=True, help="Show what would change; change nothing."),
        click.option(
            "--force",
            is_flag=True,
            help="Resolve conflicts for this side and lift the delete cap.",
        ),
        click.option(
            "--max-delete",
            type=click.IntRange(min=0),
            metavar="N",
            help="Allow up to N deletions [default: half of the tracked files].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class Output:
    def __init__(self, quiet: bool, verbose: bool) -> None:
        self.quiet, self.verbose = quiet, verbose

    def out(self, text: str) -> None:
        if not self.quiet and text:
            click.echo(text)

    def warn(self, text: str) -> None:
        if not self.quiet:
            click.echo(f"fileconsul: warning: {text}", err=True)

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
        yield sync.Run(settings, client, lock_wait=lock_wait)
        out.debug(f"{client.requests} requests, {client.bytes_received} bytes received")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fileconsul")
def cli() -> None:
    """Share a directory tree across a Consul cluster through its key/value store."""


@cli.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.pass_context
def status(ctx: click.Context, /, as_json: bool, quiet: bool, verbose: bool, **kw: Any) -> None:
    """Show what push and pull would change, and any conflicts.

    Exits 0 when in sync, 1 when there is anything to push, pull or resolve.
    """
    out = Output(quiet, verbose)
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
@click.pass_context
def push(
    ctx: click.Context,
    /,
    quiet: bool,
    verbose: bool,
    dry_run: bool,
    force: bool,
    max_delete: int | None,
    **kw: Any,
) -> None:
    """Send local changes to Consul as one commit."""
    out = Output(quiet, verbose)
    with open_run(out, **kw) as run:
        outcome = sync.push(run, force=force, dry_run=dry_run, max_delete=max_delete)
    _finish(ctx, out, "push", outcome)


@cli.command()
@connection_options
@change_options
@click.pass_context
def pull(
    ctx: click.Context,
    /,
    quiet: bool,
    verbose: bool,
    dry_run: bool,
    force: bool,
    max_delete: int | None,
    **kw: Any,
) -> None:
    """Apply remote changes to the local tree, verified and atomically."""
    out = Output(quiet, verbose)
    with open_run(out, **kw) as run:
        outcome = sync.pull(run, force=force, dry_run=dry_run, max_delete=max_delete)
    _finish(ctx, out, "pull", outcome)


def _finish(ctx: click.Context, out: Output, command: str, outcome: sync.Outcome) -> None:
    for warning in outcome.warnings:
        out.warn(warning)
    out.out(render.outcome_text(command, outcome))
    for path, why in outcome.skipped:
        click.echo(f"fileconsul: skipped {path!r}: {why}", err=True)
    ctx.exit(outcome.exit_code)


def main() -> None:
    sys.exit(cli.main(prog_name="fileconsul"))
