"""What every command shares: the error boundary (one line on stderr, the exit code), the
connection and path options (before or after the command name, into one `Common` object on
the click context), the output, and the Context each command works with."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from fileconsul import __version__, config
from fileconsul.commands.context import Context
from fileconsul.errors import EXIT_INTERNAL, FileconsulError, Interrupted, InvalidInput, UsageError
from fileconsul.store.client import ConsulClient
from fileconsul.store.commit import Step

F = TypeVar("F", bound=Callable[..., Any])
#: Pushes and pulls of fewer files finish before a bar would be worth drawing.
PROGRESS_MIN = 100


class Group(click.Group):
    """Turns errors into one line on stderr and their exit code, never a traceback: fileconsul's
    own, an interrupt, a file-system error that escaped the writer (exit 5, naming the path)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FileconsulError as exc:
            click.echo(f"fileconsul: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("fileconsul: interrupted", err=True)
            ctx.exit(Interrupted.exit_code)
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            click.echo(f"fileconsul: cannot use{where} ({exc.strerror or exc})", err=True)
            ctx.exit(InvalidInput.exit_code)
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
    _common(
        "-v",
        "--verbose",
        is_flag=True,
        help="List every change (push, pull, rollback, log), and print request counts and "
        "bytes received.",
    ),
]


def stack(func: F, options: list[Callable[[Any], Any]]) -> F:
    """Apply click option decorators in the order they are listed (as --help shows them)."""
    for option in reversed(options):
        func = option(func)
    return func


def common_options(func: F) -> F:
    return stack(func, COMMON_OPTIONS)


JSON = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object instead of text."
)
MAX_DELETE = click.option(
    "--max-delete",
    type=click.IntRange(min=0),
    metavar="N",
    help="Allow up to N deletions [default: half of the tracked files].",
)
DRY_RUN = click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
NODE = click.option(
    "--node", metavar="NAME", help="Node name in records and reports [default: the agent's]."
)
MESSAGE = click.option(
    "-m", "--message", default="", metavar="TEXT", help="Why: kept in the commit record."
)
LOG_FORMAT = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One timestamped line per event, or one JSON object per line.",
)
METRICS_ADDR = click.option(
    "--metrics-addr",
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics.",
)


# -- output -----------------------------------------------------------------------------------


class Output:
    def __init__(self, common: Common) -> None:
        self.quiet, self.verbose = common.quiet, common.verbose

    def out(self, text: str) -> None:
        if not self.quiet and text:
            click.echo(text)

    def json(self, data: Any) -> None:
        click.echo(json.dumps(data, indent=2))

    def warn(self, text: str) -> None:
        if not self.quiet:
            click.echo(f"fileconsul: warning: {text}", err=True)

    def notice(self, text: str) -> None:
        """Said even with --quiet: something the operator did is being answered."""
        click.echo(f"fileconsul: {text}", err=True)

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


def _checked_basepath(settings: config.Settings, out: Output, create: bool) -> None:
    """Refuse a basepath that does not exist (creating nothing), unless `create`: a pull into a
    new directory makes it, and says so."""
    path: Path = settings.basepath
    if path.is_dir():
        return
    if path.exists():
        raise UsageError(f"the basepath {path} is not a directory")
    if not create:
        raise UsageError(f"the basepath {path} does not exist; nothing was done (check --basepath)")
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create the basepath {path} ({exc.strerror})") from exc
    out.warn(f"created the basepath {path}")


@contextmanager
def open_run(
    ctx: click.Context, *, stale: bool = False, local: bool = True, create: bool = False
) -> Iterator[tuple[Context, Output]]:
    """The command's Context (settings, one Consul client) and its output. With `local`, the
    command works on the basepath, which must exist (or, with `create`, is created)."""
    common = ctx.ensure_object(Common)
    out = Output(common)
    settings = common.settings()
    for warning in settings.warnings:
        out.warn(warning)
    if local:
        _checked_basepath(settings, out, create)
    with ConsulClient(settings.consul) as client:
        yield Context(settings, client, common.lock_wait, stale, out.progress, out.notice), out
        out.debug(f"{client.requests} requests, {client.bytes_received} bytes received")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fileconsul")
@common_options
def cli() -> None:
    """Share a directory tree across a Consul cluster through its key/value store.

    \b
    On one node:    fileconsul push --basepath /etc/consul-share
    On the others:  fileconsul pull --basepath /etc/consul-share
    Its history:    fileconsul log; fileconsul diff; fileconsul rollback REV
    """
