"""status, push and pull: moving files between this node and Consul."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from fileconsul.cli import render
from fileconsul.cli.base import (
    DRY_RUN,
    JSON,
    MAX_DELETE,
    MESSAGE,
    NODE,
    Output,
    cli,
    common_options,
    open_run,
    stack,
)
from fileconsul.cli.key_commands import SIGN_KEY, TRUSTED_KEYS, signed, verifying
from fileconsul.commands.outcome import Outcome
from fileconsul.commands.push import PushOptions
from fileconsul.commands.push import push as push_tree
from fileconsul.commands.status import status as status_of
from fileconsul.errors import EXIT_CHANGES, FileconsulError, InvalidInput, UsageError
from fileconsul.fleet import deliver, reports
from fileconsul.fleet.hooks import DEFAULT_TIMEOUT, Hooks
from fileconsul.model.records import DEFAULT_KEEP
from fileconsul.model.tree import KVEntry
from fileconsul.store.client import entry_of

FORCE = click.option(
    "--force", is_flag=True, help="Resolve conflicts for this side and lift the delete cap."
)
NO_REPORT = click.option(
    "--no-report",
    is_flag=True,
    help="Do not write this node's fleet report (<prefix>.fileconsul/nodes/<node>).",
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
        help="Run CMD when applying, the check or the --exec hook failed ($FILECONSUL_ERROR "
        "says why).",
    ),
    click.option(
        "--check",
        "check_cmd",
        metavar="CMD",
        help="Run CMD on the applied tree before --exec; when it fails, every file is put back "
        "as it was, --on-failure runs, and the revision is reported rejected (pull exits 8).",
    ),
    click.option(
        "--hook-timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=DEFAULT_TIMEOUT,
        show_default=True,
        metavar="SECONDS",
        help="Kill --check, --exec or --on-failure (and every process it started) after "
        "SECONDS: a failure (exit 124).",
    ),
]


@cli.command()
@common_options
@JSON
@click.option(
    "--fleet",
    "show_fleet",
    is_flag=True,
    help="List every node's state (current, lagging, failed, rejected or halted) and the "
    "revision it last applied.",
)
@click.option(
    "--dcs",
    metavar="DC,DC...",
    help="With --fleet: the fleets of these datacenters (comma-separated, or 'all'), each "
    "with its head and its source when it is a replica.",
)
@click.pass_context
def status(ctx: click.Context, as_json: bool, show_fleet: bool, dcs: str | None) -> None:
    """Show what push and pull would change, conflicts, and what they would refuse.

    Exits 0 when in sync, 1 when there is something to push or pull, 4 on a conflict, 5 when a
    push or pull would refuse something (a name, a size, a mass delete). With --fleet, exits 1
    when any node is not current.

    \b
    Examples:
      fileconsul status --basepath /etc/consul-share
      fileconsul status --fleet --json
      fileconsul status --fleet --dcs dc1,dc2,dc3
    """
    if dcs:
        if not show_fleet:
            raise UsageError("--dcs goes with --fleet: fileconsul status --fleet --dcs dc1,dc2")
        _fleets(ctx, [dc.strip() for dc in dcs.split(",") if dc.strip()], as_json)
    if show_fleet:
        with open_run(ctx, local=False) as (run, out):
            found = reports.read(run.client, run.prefix)
        if as_json:
            out.json(render.fleet_json(run.prefix, found))
        else:
            out.out(render.fleet_text(found))
        ctx.exit(0 if found.all_current else EXIT_CHANGES)
    with open_run(ctx) as (run, out):
        result = status_of(run)
    for warning in result.warnings:
        out.warn(warning)
    out.debug("remote read from the head alone" if result.view.tree.fast else "remote values read")
    where = {"revision": result.view.record.revision, "head": result.view.tree.revision}
    if as_json:
        out.json(render.status_json(result.prefix, result.plan, **where, refusals=result.refusals))
    else:
        out.out(render.status_text(result.plan, **where, refusals=result.refusals))
    ctx.exit(result.exit_code)


def _fleets(ctx: click.Context, dcs: list[str], as_json: bool) -> None:
    """The fleets of several datacenters; exits 0 when every node of every one holds the
    same head revision."""
    with open_run(ctx, local=False) as (run, out):
        found = reports.read_datacenters(run.settings.consul, run.prefix, dcs)
    if as_json:
        out.json(render.fleets_json(run.prefix, found))
    else:
        out.out(render.fleets_text(found))
    revisions = {fleet.revision for _, fleet in found}
    in_step = len(revisions) == 1 and all(fleet.all_current for _, fleet in found)
    ctx.exit(0 if in_step else EXIT_CHANGES)


@cli.command()
@common_options
@click.argument("nodes", nargs=-1, required=True, metavar="NODE...")
@click.pass_context
def forget(ctx: click.Context, nodes: tuple[str, ...]) -> None:
    """Remove the fleet reports of decommissioned nodes, so that `status --fleet` stops
    counting them (a node that reports again is back).

    Exits 2, removing nothing, when a NODE has no report.

    \b
    Examples:
      fileconsul forget old-web-3
      fileconsul status --fleet --json | jq -r '.nodes[] | select(.state == "lagging") | .node'
    """
    with open_run(ctx, local=False) as (run, out):
        missing = reports.forget(run.client, run.prefix, list(nodes))
    if missing:
        raise UsageError(
            f"no fleet report for {', '.join(missing)} under {run.prefix}; nothing was removed "
            "(see the names with `fileconsul status --fleet`)"
        )
    out.out(f"Forgot {len(nodes)} {'node' if len(nodes) == 1 else 'nodes'}: {', '.join(nodes)}.")


@cli.command()
@common_options
@MESSAGE
@DRY_RUN
@FORCE
@MAX_DELETE
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    metavar="N",
    help="Keep the last N revisions from now on, for every pusher of the prefix (a change "
    f"of N is committed even with nothing else to push) [default: as before, else "
    f"{DEFAULT_KEEP}].",
)
@click.option(
    "--new-history",
    is_flag=True,
    help="Start a new history over one whose head was lost (deleted or never restored): "
    "its revisions follow the old ones, whose records and kept contents are deleted.",
)
@SIGN_KEY
@TRUSTED_KEYS
@click.option(
    "--renew",
    is_flag=True,
    help="With --sign-key: commit a signed revision even when nothing changed, so that "
    "nodes with --max-age see a fresh signature.",
)
@JSON
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
    new_history: bool,
    sign_key: Path | None,
    trusted_keys: Path | None,
    renew: bool,
    as_json: bool,
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
      fileconsul push --sign-key /etc/fileconsul/release.key -m "signed"
    """
    if renew and sign_key is None:
        raise UsageError("--renew commits a fresh signature: give --sign-key too")
    options = PushOptions(force, dry_run, max_delete, message, keep, node, new_history, renew)
    with open_run(ctx) as (run, out):
        run = signed(run, sign_key=sign_key, trusted_keys=trusted_keys)
        outcome = push_tree(run, options)
        if not no_report:
            outcome.warnings += deliver.report_push(run, node, outcome)
    print_outcome(out, "push", outcome, as_json, run.prefix)
    ctx.exit(outcome.exit_code)


@cli.command()
@common_options
@DRY_RUN
@FORCE
@MAX_DELETE
@lambda f: stack(f, HOOK_OPTIONS)
@verifying
@JSON
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
    check_cmd: str | None,
    hook_timeout: float,
    trusted_keys: Path | None,
    max_age: float | None,
    as_json: bool,
    no_report: bool,
    node: str | None,
    strict: bool,
) -> None:
    """Apply remote changes to the local tree, verified and atomically.

    Exits 9 when --exec failed (the change stands). Run by `consul watch` (CONSUL_INDEX is
    set), it reads the watch's JSON from stdin, uses the values a keyprefix payload carries,
    and exits 0 even on errors unless --strict.

    \b
    Examples:
      fileconsul pull --basepath /etc/consul-share --exec 'systemctl reload consul'
      fileconsul pull --trusted-keys /etc/fileconsul/trusted/
      consul watch -type key -key fileconsul.fileconsul/head fileconsul pull
    """
    as_handler = "CONSUL_INDEX" in os.environ
    hooks = Hooks(exec_cmd, on_failure, check_cmd, hook_timeout)
    options = deliver_options(
        hooks, no_report, node, max_delete, force, dry_run, json_output=as_json
    )
    code = 0
    try:
        with open_run(ctx, create=True) as (run, out):
            run = signed(run, trusted_keys=trusted_keys, max_age=max_age)
            entries = parse_payload(sys.stdin.read(), run.prefix) if as_handler else None
            delivery = deliver.deliver(run, options, entries=entries)
        code = _print_delivery(out, delivery, as_json=as_json, prefix=run.prefix)
    except FileconsulError as exc:
        if not as_handler or strict:
            raise
        click.echo(f"fileconsul: {exc}", err=True)
    ctx.exit(0 if as_handler and not strict else code)


def deliver_options(
    hooks: Hooks,
    no_report: bool,
    node: str | None,
    max_delete: int | None,
    force: bool = False,
    dry_run: bool = False,
    *,
    halt: bool = False,
    json_output: bool = False,
) -> deliver.DeliverOptions:
    """The delivery's options; what the hooks print goes to stdout, or to stderr when stdout
    carries JSON."""
    return deliver.DeliverOptions(
        hooks=hooks,
        report=not no_report,
        node=node,
        force=force,
        dry_run=dry_run,
        max_delete=max_delete,
        halt_on_failure=halt,
        # A node that checks or halts also keeps out of a halted rollout.
        respect_halts=halt or hooks.check is not None,
        echo=(sys.stderr if json_output else sys.stdout).buffer,
    )


def _print_delivery(
    out: Output,
    delivery: deliver.Delivery,
    *,
    as_json: bool = False,
    prefix: str = "",
) -> int:
    """Print what a delivery did: text, or one JSON object (nothing else on stdout); its exit
    code."""
    outcome = delivery.outcome
    if as_json:
        out.json(render.delivery_json(prefix, delivery))
    else:
        if outcome is not None:
            print_outcome(out, "pull", outcome)
            signed_at = render.signed_line(outcome, time.time())
            if signed_at:
                out.out(signed_at)
        if delivery.check is not None:
            line = f"--check exited {delivery.check.exit}"
            if delivery.check.exit == 0:
                out.out(line)
            else:
                out.warn(f"{line}: {delivery.check.tail}")
        result = delivery.hook_result
        if delivery.hook is not None and result is not None:
            line = f"hook exited {result.exit}: {delivery.hook}"
            out.out(line) if result.exit == 0 else out.warn(line)
        if outcome is not None and outcome.held:
            out.warn(outcome.held)
        for note in delivery.notes:
            out.warn(note)
    if delivery.error is not None:
        out.error(str(delivery.error))
    return delivery.exit_code


def print_outcome(
    out: Output, command: str, outcome: Outcome, as_json: bool = False, prefix: str = ""
) -> None:
    if as_json:
        out.json(render.outcome_json(command, prefix, outcome))
        return
    for warning in outcome.warnings:
        out.warn(warning)
    out.out(render.outcome_text(command, outcome, verbose=out.verbose))
    for path, why in outcome.skipped:
        out.error(f"skipped {path!r}: {why}")


# -- `fileconsul pull` as a `consul watch` handler ------------------------------------------


def parse_payload(text: str, prefix: str) -> list[KVEntry] | None:
    """The tree from a `consul watch -type keyprefix` payload; None when Consul must be read
    (a `-type key` payload, or `null`: an empty prefix or a missing key)."""
    if not text.strip():
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(
            f"the consul watch payload on stdin is not JSON ({exc}); run fileconsul from "
            "`consul watch -type keyprefix` or `-type key`"
        ) from exc
    if data is None or (isinstance(data, dict) and "Key" in data):
        return None
    if not isinstance(data, list) or not all(isinstance(e, dict) and "Key" in e for e in data):
        raise InvalidInput(
            "the consul watch payload on stdin is neither a key nor a key prefix result; "
            "use `consul watch -type keyprefix` or `-type key`"
        )
    outside = [e["Key"] for e in data if not str(e["Key"]).startswith(prefix + "/")]
    if outside:
        raise InvalidInput(
            f"the consul watch payload holds {outside[0]!r}, outside {prefix + '/'}: watch "
            f"`-prefix {prefix}/` or pass the matching --prefix"
        )
    try:
        return [entry_of(e) for e in data]
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidInput(f"the consul watch payload has a malformed entry ({exc})") from exc
