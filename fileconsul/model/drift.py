"""Drift: a file this node manages that was changed here by hand since it was given it.

A managed file is one in the node's base (what it was given at its last sync); drift is
decided from two sets of facts alone, the base and the local tree, so that a periodic scan,
a file watcher or the model of a future daemon can all ask the same question. A new local file
is not drift (nothing manages it); a change `watch --push` sends is not either (it is pushed).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import NamedTuple

from fileconsul.model.facts import ChangeKind, Files, classify
from fileconsul.model.plan import Sides


class Drift(NamedTuple):
    path: str
    #: How the local file differs from what the node was given: modified, deleted or mode.
    change: ChangeKind


def drifted(base: Files, local: Files) -> list[Drift]:
    """Every managed path whose local facts differ from the base, sorted by path."""
    moved = {p for p, _ in base.items() ^ local.items() if p in base}
    found = []
    for path in sorted(moved):
        change = classify(base[path], local.get(path))
        if change is not None:
            found.append(Drift(path, change))
    return found


def restoring(seen: Sides, paths: Collection[str]) -> Sides:
    """The sides as if this node had been given its local state of `paths`: the plan then
    sees a remote change there, and a pull writes the committed version over the edit (or
    deletes a file the node was never given). Other paths are planned as before."""
    base = dict(seen.base)
    for path in paths:
        info = seen.local.get(path)
        if info is None:
            base.pop(path, None)
        else:
            base[path] = info
    return replace(seen, base=base)
