"""halt and resume: an operator stops a rollout, or lets a halted one go on."""

from __future__ import annotations

import click

from fileconsul.cli import render
from fileconsul.cli.base import NODE, cli, common_options, open_run
from fileconsul.commands.context import current_user
from fileconsul.fleet import reports, rollout


@cli.command()
@common_options
@click.option(
    "-m",
    "--message",
    "reason",
    default="",
    metavar="REASON",
    help="Why: kept in the halt, shown by status --fleet and the dashboard "
    "[default: 'halted by USER'].",
)
@NODE
@click.pass_context
def halt(ctx: click.Context, reason: str, node: str | None) -> None:
    """Halt the rollout of the head revision: no watcher that checks or halts applies it
    until `fileconsul resume` or a newer revision. Nodes that applied it keep it.

    \b
    Examples:
      fileconsul halt -m "nginx reloads fail on the edge nodes"
      fileconsul status --fleet
    """
    with open_run(ctx, local=False) as (run, out):
        why = reason or f"halted by {current_user()}"
        name = run.client.node_name(node)
        made = rollout.halt_head(run.client, run.prefix, name, why, reports.now())
        fleet = reports.read(run.client, run.prefix)
    if made is None:
        out.out(f"{render.halt_line(fleet)} Nothing was changed.")
        return
    out.out(
        f"halted the rollout of r{made.revision}: {made.reason}. No watcher applies it until "
        "`fileconsul resume` or a newer revision."
    )


@cli.command()
@common_options
@click.pass_context
def resume(ctx: click.Context) -> None:
    """Lift the halt: the watchers held back apply the halted revision now (a node whose own
    --check rejected it does not try it again).

    \b
    Examples:
      fileconsul resume
      fileconsul status --fleet
    """
    with open_run(ctx, local=False) as (run, out):
        lifted = rollout.resume(run.client, run.prefix)
    if lifted is None:
        out.out("Nothing is halted.")
    elif lifted.halt is None:
        out.out("Deleted a halt that could not be read; the watchers held back go on.")
    elif lifted.holding:
        stop = lifted.halt
        out.out(
            f"lifted the halt of r{stop.revision} ({stop.node}: {stop.reason}); the watchers "
            "held back apply it now."
        )
    else:
        out.out(f"deleted the halt of r{lifted.halt.revision}, which a newer revision had lifted.")
