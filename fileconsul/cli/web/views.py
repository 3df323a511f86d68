"""What the dashboard serves as JSON: the snapshot of the fleet, and one revision with its
changes and its diff (the same text as `fileconsul show --patch`)."""

from __future__ import annotations

from typing import Any

from fileconsul.cli import render
from fileconsul.commands import diff as diffs
from fileconsul.commands import history
from fileconsul.commands.context import Context
from fileconsul.fleet.follow import Snapshot

#: Changes of each revision the log lists (the revision's own view has them all).
LOG_CHANGES = 10
#: A revision changing more paths than this is shown without its diff (use show --patch).
PATCH_PATHS = 200
#: Characters of diff shown, at most.
PATCH_CHARS = 1_000_000


def state(snapshot: Snapshot, *, actions: bool) -> dict[str, Any]:
    """Everything the page shows, in one object; `version` moves with every change."""
    head = snapshot.head
    return {
        "prefix": snapshot.prefix,
        "version": snapshot.version,
        "actions": actions,
        "trouble": snapshot.trouble,
        "head": None if head is None else render.commit_json(head.commit),
        "fleet": render.fleet_json(snapshot.prefix, snapshot.fleet),
        "log": [_logged(render.commit_json(c)) for c in snapshot.log],
    }


def _logged(commit: dict[str, Any]) -> dict[str, Any]:
    changes = commit["changes"]
    return {**commit, "changes": changes[:LOG_CHANGES], "change_count": len(changes)}


def revision(ctx: Context, number: int) -> dict[str, Any]:
    """One kept revision: who, when, why, each change with its facts, and its diff."""
    _, commit = history.commit_of(ctx, number)
    shown = render.commit_json(commit, facts=True)
    if len(commit.changes) > PATCH_PATHS:
        shown["patch"] = None
        shown["patch_note"] = (
            f"{len(commit.changes):,} changes: too many to show here; "
            f"`fileconsul show {number} --patch` prints them all"
        )
        return shown
    patch = render.diff_text(diffs.patch_of(ctx, number))
    shown["patch"] = patch[:PATCH_CHARS]
    shown["patch_note"] = (
        f"the diff is cut at {PATCH_CHARS:,} characters; `fileconsul show {number} --patch` "
        "prints it whole"
        if len(patch) > PATCH_CHARS
        else None
    )
    return shown
