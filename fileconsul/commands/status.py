"""status: what push and pull would move, the conflicts, and what they would refuse."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field

from fileconsul.commands import preflight
from fileconsul.commands.context import Context
from fileconsul.commands.pipeline import View, look, notes
from fileconsul.errors import ConflictError, IntegrityError, InvalidInput
from fileconsul.local import record as records
from fileconsul.local.lock import local_lock
from fileconsul.model import plan as planner
from fileconsul.model.plan import Plan


@dataclass(frozen=True)
class Status:
    prefix: str
    plan: Plan
    view: View
    #: What a push or pull would refuse, each said once.
    refusals: list[str] = field(default_factory=list)
    #: Why nothing can be planned on Consul's tree at all (its head lost, its facts unknown).
    broken: str | None = None

    @property
    def in_sync(self) -> bool:
        return (
            self.plan.in_sync and not self.view.sides.gone and not self.refusals and not self.broken
        )

    @property
    def exit_code(self) -> int:
        """7 when Consul's tree cannot be planned on, 5 when a push or pull would refuse
        something, 4 on a conflict (a person must decide), 1 when there is something to push or
        pull, 0 in sync."""
        if self.broken:
            return IntegrityError.exit_code
        if self.refusals:
            return InvalidInput.exit_code
        if self.plan.conflicts:
            return ConflictError.exit_code
        return 0 if self.in_sync else 1

    @property
    def warnings(self) -> list[str]:
        unsafe = [f"skipped unsafe key {key!r}: {why}" for key, why in self.view.tree.unsafe]
        return notes(self.view) + unsafe


def status(ctx: Context) -> Status:
    root = ctx.basepath
    record = records.load(root, ctx.prefix)
    view = look(ctx, record)
    if record.exists and view.local.hash_cache != record.hash_cache:
        # Like `git status` refreshing its index: only the hash cache moves, never the base.
        with suppress(ConflictError), local_lock(root, wait=0):
            record.hash_cache = view.local.hash_cache
            records.save_cache(root, record)
    planned = view.sides.planned()
    broken = planner.unknown_tree(view.tree) or planner.lost_history(view.tree)
    refusals = [broken] if broken else []
    return Status(
        ctx.prefix, planned, view, refusals + preflight.refusals(ctx, view, planned), broken
    )
