"""A watch's drift: a scan of the tree every so often for managed files changed here by hand,
reported in the node's fleet report (state `drifted`, with the paths), and, with `--heal`, put
back to their committed version by a pull of those paths (Puppet's corrective change).

When the paths drifted change, the report is rewritten; a delivery in between carries them.
A put-back goes through the delivery like any apply (`--check`, `--exec`, the report): the
watch asks for it, and scans again at once, without healing, to report what it left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from fileconsul.commands import drift
from fileconsul.commands.context import Context
from fileconsul.errors import FileconsulError
from fileconsul.fleet import reports
from fileconsul.fleet.deliver import DeliverOptions, Delivery
from fileconsul.fleet.metrics import Metrics
from fileconsul.local import record as records

#: Seconds between two scans for drift, by default.
DEFAULT_EVERY = 30.0
#: Paths named in a drift event, at most.
_NAMED = 5

Tell = Callable[..., None]


@dataclass
class DriftWatch:
    """Where a watch stands on drift: how often it scans, whether it heals, what it found."""

    #: Seconds between scans; 0: never scan.
    every: float = 0.0
    heal: bool = False
    #: The drifted paths last found (and reported).
    paths: tuple[str, ...] = ()
    #: Paths to put back at the next delivery.
    restore: frozenset[str] = field(default_factory=frozenset)
    _due: float = 0.0
    _healing: bool = True

    def due(self) -> bool:
        return self.every > 0 and time.monotonic() >= self._due

    def wait(self, wait: float) -> float:
        """A blocking query's wait, cut short so that the next scan comes on time."""
        if self.every <= 0:
            return wait
        return max(0.1, min(wait, self._due - time.monotonic()))

    def scan(self, ctx: Context, options: DeliverOptions, tell: Tell, metrics: Metrics) -> None:
        """Scan for drift; say and report what changed since the last scan, and ask for a
        put-back when healing."""
        self._due = time.monotonic() + self.every
        try:
            found = drift.look(ctx)
        except FileconsulError as exc:
            tell("warning", f"the scan for drift failed ({exc})", level="warning")
            return
        if found is None:
            return
        paths = tuple(d.path for d in found)
        metrics.drifted(len(paths))
        if paths and self.heal and self._healing:
            self.restore = frozenset(paths)
        self._healing = True
        if paths == self.paths:
            return
        self.paths = paths
        if paths:
            named = ", ".join(f"{d.path} ({d.change})" for d in found[:_NAMED])
            more = f" and {len(found) - _NAMED} more" if len(found) > _NAMED else ""
            what = "file differs" if len(found) == 1 else "files differ"
            tell(
                "drift",
                f"{len(found)} managed {what} from what this node was given: {named}{more}",
                level="warning",
                paths=list(paths),
            )
        else:
            tell("drift", "no managed file differs from what this node was given any more")
        if options.report:
            note = report(ctx, options.node, paths)
            if note:
                tell("warning", note, level="warning")

    def delivered(
        self, restore: frozenset[str], delivery: Delivery, tell: Tell, metrics: Metrics
    ) -> None:
        """After a delivery asked to put `restore` back: say what it put back, count it, and
        scan again at once (without healing) to report what is left."""
        if not restore:
            return
        self.restore = frozenset()
        outcome = delivery.outcome
        done = outcome.actions if outcome is not None and delivery.changed else []
        applied = [a.path for a in done if a.path in restore]
        if not applied:
            return
        revision = delivery.revision
        metrics.count("drift_put_back", len(applied))
        shown = ", ".join(applied[:_NAMED]) + (" ..." if len(applied) > _NAMED else "")
        tell(
            "heal",
            f"put back {len(applied)} drifted {'file' if len(applied) == 1 else 'files'} "
            f"to r{revision}: {shown}",
            level="warning",
            revision=revision,
            paths=applied,
        )
        self._due, self._healing = 0.0, False


def report(ctx: Context, node: str | None, paths: tuple[str, ...]) -> str | None:
    """Rewrite this node's fleet report with `paths` drifted (its other facts as they were);
    a note when it could not be written."""
    try:
        name = ctx.client.node_name(node)
        previous = reports.read_one(ctx.client, ctx.prefix, name)
    except FileconsulError as exc:
        return f"fleet report not written ({exc})"
    if previous is None:
        revision = records.load(ctx.basepath, ctx.prefix, cache=False).revision
        previous = reports.Report(name, revision, reports.now(), "ok")
    new = replace(
        previous,
        time=reports.now(),
        drifted=paths[: reports.DRIFT_LISTED],
        drift_count=len(paths),
    )
    return reports.report(ctx.client, ctx.prefix, new)
