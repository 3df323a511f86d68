"""A replica: a tree carried from another datacenter's, revision by revision, by a replicator.

No I/O here: where a target stands against its source (current, behind within the source's
kept history, to be taken whole, or refused), and whether a revision may go on to the
targets yet (no halt of it anywhere, enough of the source's nodes holding it, for long
enough). A replica's head names its source; a push or a rollback there is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from fileconsul.model.records import Commit, Head

Kind = Literal["current", "behind", "whole", "refused"]


def refusal(head: Head | None, prefix: str) -> str | None:
    """Why a push or a rollback cannot commit on `head`, when the tree is a replica."""
    if head is None or head.source is None:
        return None
    return (
        f"refused: {prefix} in this datacenter is a replica of datacenter {head.source}, "
        f"written only by its replicator; push or roll back in {head.source} instead "
        f"(--dc {head.source}), and the change reaches here from there; nothing was changed"
    )


@dataclass(frozen=True)
class Standing:
    """Where a target stands: `current`; `behind`, the records since its revision being
    kept in the source (it takes them one revision at a time); `whole`, it takes the
    source's head tree as one commit; `refused`, nothing is written. `reason` says why."""

    kind: Kind
    reason: str = ""


def standing(
    source: Head,
    target: Head | None,
    *,
    source_dc: str,
    target_dc: str,
    kept: Commit | None,
    has_files: bool,
    adopt: bool,
) -> Standing:
    """Where `target` stands against `source`. `kept` is the source's record of the
    target's revision when the source still keeps it; `has_files`, whether the target holds
    files without a head; `adopt`, whether a tree of the target's own may be replaced."""
    own = _own_tree(target, source_dc, target_dc, has_files)
    if own is None and target is not None:
        own = _diverged(source, target, kept, source_dc, target_dc)
    if own is not None:
        if adopt:
            return Standing("whole", f"adopting it (--adopt): {own}")
        return Standing(
            "refused",
            f"{own}; nothing is written there (--adopt replaces its tree with {source_dc}'s)",
        )
    if target is None:
        return Standing("whole", f"{target_dc} holds no revision yet")
    if target.revision == source.revision:
        return Standing("current")
    if target.revision < source.oldest - 1:
        return Standing(
            "whole",
            f"{target_dc} is at revision {target.revision}, behind the revisions {source_dc} "
            f"keeps ({source.oldest} to {source.revision})",
        )
    return Standing("behind")


def _own_tree(target: Head | None, source_dc: str, target_dc: str, has_files: bool) -> str | None:
    if target is None:
        return f"{target_dc} holds files with no fileconsul history" if has_files else None
    if target.source is None:
        return (
            f"{target_dc} holds a tree of its own (revision {target.revision}), not a replica "
            f"of {source_dc}"
        )
    if target.source != source_dc:
        return f"{target_dc} is a replica of {target.source}, not of {source_dc}"
    return None


def _diverged(
    source: Head, target: Head, kept: Commit | None, source_dc: str, target_dc: str
) -> str | None:
    """Why the target's revision is not the source's revision of that number, if it is not."""
    if source.history and target.history and source.history != target.history:
        return (
            f"{target_dc} holds another history than {source_dc}'s (the source's history "
            "started over, or is another tree's)"
        )
    same = None
    if target.revision == source.revision:
        same = source.commit
    elif target.revision < source.revision:
        same = kept
    if target.revision <= source.revision and (
        same is None or same.fields() == target.commit.fields()
    ):
        return None
    return (
        f"{target_dc}'s revision {target.revision} is not {source_dc}'s revision of that number "
        f"(at {source.revision}): the source's history started over, or is another tree's"
    )


@dataclass(frozen=True)
class Gate:
    """What a revision must pass before it goes on: no halt of it in any datacenter; with
    `min_current`, that share of the source's reporting nodes holding it (or a later
    revision) with no failure; all of it for `soak` seconds."""

    min_current: float | None = None
    soak: float = 0.0

    @property
    def reads_fleet(self) -> bool:
        return self.min_current is not None


@dataclass(frozen=True)
class Verdict:
    """The newest revision that may go on (None: none yet), why the newest one waits, in how
    many seconds a soak ends, and since when each revision has passed (for the next look)."""

    revision: int | None
    held: str | None = None
    wake_in: float | None = None
    passed_since: dict[int, float] = field(default_factory=dict)


def judge(
    gate: Gate,
    revisions: Sequence[int],
    *,
    halts: Mapping[int, str],
    nodes: Sequence[tuple[int, bool]],
    passed_since: Mapping[int, float],
    now: float,
    source_dc: str,
) -> Verdict:
    """The newest of `revisions` that passes `gate` now. `halts` says which revisions are
    halted where; `nodes` holds each source node's (revision, whether it is well);
    `passed_since` when each revision was first seen passing."""
    since: dict[int, float] = {}
    held = None
    wake = None
    for revision in sorted(revisions, reverse=True):
        why = _blocked(gate, revision, halts, nodes, source_dc)
        if why is None:
            start = since[revision] = passed_since.get(revision, now)
            left = start + gate.soak - now
            if left <= 0:
                return Verdict(revision, held, wake, since)
            why = f"soaking, {left:.1f}s left of {gate.soak:g}s"
            wake = left if wake is None else min(wake, left)
        held = held or f"revision {revision} waits: {why}"
    return Verdict(None, held, wake, since)


def _blocked(
    gate: Gate,
    revision: int,
    halts: Mapping[int, str],
    nodes: Sequence[tuple[int, bool]],
    source_dc: str,
) -> str | None:
    if revision in halts:
        return f"it is halted ({halts[revision]})"
    if gate.min_current is None:
        return None
    if not nodes:
        return f"no node in {source_dc} has reported yet"
    holding = sum(1 for held, well in nodes if well and held >= revision)
    needed = max(1, math.ceil(gate.min_current * len(nodes) - 1e-9))
    if holding < needed:
        return (
            f"{holding} of {len(nodes)} nodes in {source_dc} hold it, {needed} needed "
            f"(--min-current {gate.min_current:g})"
        )
    return None
