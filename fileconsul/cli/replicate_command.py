"""replicate: one tree carried from a datacenter into others, revision by revision, as a
service; and making a replica a tree of its own again."""

from __future__ import annotations

import click

from fileconsul.cli.base import LOG_FORMAT, METRICS_ADDR, cli, common_options, open_run
from fileconsul.cli.events import Events
from fileconsul.errors import UsageError
from fileconsul.fleet.metrics import ReplicationMetrics
from fileconsul.fleet.replicate import LOCK_TTL, ReplicateOptions, promote, replicate
from fileconsul.fleet.watch import Stopper
from fileconsul.model.replica import Gate


@cli.command(name="replicate")
@common_options
@click.option(
    "--from", "source", metavar="DC", help="The source datacenter, where pushes are made."
)
@click.option(
    "--to",
    "targets",
    multiple=True,
    metavar="DC",
    help="A target datacenter: a replica of the source (repeat for several).",
)
@click.option(
    "--once",
    is_flag=True,
    help="One pass: bring each target as far as the gates allow now, then exit (0 when every "
    "target holds the source's head, 1 when a revision was held back).",
)
@click.option(
    "--min-current",
    type=click.FloatRange(min=0, max=1),
    metavar="SHARE",
    help="Staged rollout: a revision goes on once SHARE of the source's reporting nodes hold "
    "it with no failure (1 for every node).",
)
@click.option(
    "--soak",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="SECONDS",
    help="Staged rollout: and once that (or, without --min-current, no halt) has held for SECONDS.",
)
@click.option(
    "--adopt",
    is_flag=True,
    help="Replace a target's tree of its own (or a replica of another source) by the "
    "source's head, as one commit; the target's own history is dropped.",
)
@click.option(
    "--mirror-wipe",
    is_flag=True,
    help="When the source's tree is deleted whole (consul kv delete -recurse), delete it in "
    "the targets too [default: they keep it, and the replicator waits].",
)
@click.option(
    "--promote",
    is_flag=True,
    help="Make each --to datacenter a tree of its own: pushes are accepted there again, and "
    "replicators stop writing it (until --adopt).",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=1, max=600),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest blocking query to Consul.",
)
@click.option(
    "--max-backoff",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest wait between retries while a datacenter cannot be reached.",
)
@click.option(
    "--lock-ttl",
    type=click.IntRange(min=10, max=86400),
    default=LOCK_TTL,
    show_default=True,
    metavar="SECONDS",
    help="TTL of the session holding a target's replicator lock: a standby takes over within "
    "twice this once the active replicator died.",
)
@LOG_FORMAT
@METRICS_ADDR
@click.pass_context
def replicate_command(
    ctx: click.Context,
    source: str | None,
    targets: tuple[str, ...],
    once: bool,
    min_current: float | None,
    soak: float,
    adopt: bool,
    mirror_wipe: bool,
    promote: bool,
    wait: float,
    max_backoff: float,
    lock_ttl: int,
    log_format: str,
    metrics_addr: str | None,
) -> None:
    """Carry the tree from one datacenter into others, revision by revision (a service).

    Each target becomes a replica: the same revisions, records, contents and modes, each
    committed whole; push and rollback there are refused (exit 10). Several replicators may
    run for a target: one writes it, the others stand by. Stops cleanly on SIGTERM or SIGINT,
    between commits (exit 0).

    \b
    Examples:
      fileconsul replicate --from dc1 --to dc2 --to dc3 --log-format json
      fileconsul replicate --from dc1 --to dc2 --min-current 0.9 --soak 600
      fileconsul replicate --promote --to dc2
    """
    if not targets:
        raise UsageError("name at least one target datacenter: --to DC")
    if promote:
        _promote(ctx, targets)
        return
    if not source:
        raise UsageError("name the source datacenter: --from DC")
    options = ReplicateOptions(
        source,
        tuple(dict.fromkeys(targets)),
        Gate(min_current, soak),
        once=once,
        adopt=adopt,
        mirror_wipe=mirror_wipe,
        wait=wait,
        max_backoff=max_backoff,
        lock_ttl=lock_ttl,
    )
    stopper = Stopper()
    stopper.install()
    metrics = ReplicationMetrics(metrics_addr)
    try:
        with open_run(ctx, local=False) as (run, out):
            tell = Events("json" if log_format == "json" else "text", quiet=out.quiet)
            tell(
                "start",
                f"replicating {run.prefix} from {source} to {', '.join(options.targets)} "
                f"through {run.settings.consul.where}",
                addr=run.settings.consul.where,
                prefix=run.prefix,
                source=source,
                targets=list(options.targets),
            )
            code = replicate(run, options, stopper, tell, metrics)
    finally:
        stopper.restore()
        metrics.close()
    ctx.exit(code)


def _promote(ctx: click.Context, targets: tuple[str, ...]) -> None:
    with open_run(ctx, local=False) as (run, out):
        for dc in targets:
            head = promote(run, dc)
            if head is None:
                out.out(f"{dc}: {run.prefix} is a tree of its own already; nothing was changed.")
            else:
                out.out(
                    f"{dc}: {run.prefix} at revision {head.revision} is a tree of its own now, "
                    f"no longer a replica of {head.source}: pushes are accepted there."
                )
