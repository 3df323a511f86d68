"""The pure three-way planner: (local, base, remote) -> what to push, pull, or refuse.

No I/O here. The base is the local record of the last synced state; with no record it is
empty, so equal files count as synced and different ones as conflicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from fileconsul.errors import InvalidInput
from fileconsul.fileinfo import FileInfo, Files

ChangeKind = Literal["added", "modified", "deleted", "mode"]


class Action(NamedTuple):
    """One change to carry to the other side: `target` is the new state there, None to delete."""

    path: str
    change: ChangeKind
    target: FileInfo | None


class Conflict(NamedTuple):
    path: str
    local: ChangeKind
    remote: ChangeKind
    local_target: FileInfo | None
    remote_target: FileInfo | None


@dataclass(frozen=True)
class Plan:
    push: list[Action] = field(default_factory=list)
    pull: list[Action] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    #: Paths changed on both sides to the same state: only the record moves.
    converged: dict[str, FileInfo | None] = field(default_factory=dict)

    @property
    def in_sync(self) -> bool:
        return not (self.push or self.pull or self.conflicts)

    def pushes(self, *, force: bool) -> list[Action]:
        """What a push sends: local changes, and with `force` the local side of each conflict."""
        forced = [Action(c.path, c.local, c.local_target) for c in self.conflicts]
        return sorted(self.push + (forced if force else []), key=lambda a: a.path)

    def pulls(self, *, force: bool) -> list[Action]:
        """What a pull applies: remote changes, and with `force` the remote side of conflicts."""
        forced = [Action(c.path, c.remote, c.remote_target) for c in self.conflicts]
        return sorted(self.pull + (forced if force else []), key=lambda a: a.path)


def same(a: FileInfo | None, b: FileInfo | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.hash == b.hash and a.mode == b.mode


def classify(base: FileInfo | None, current: FileInfo | None) -> ChangeKind | None:
    """How `current` differs from `base`, or None when it does not."""
    if same(base, current):
        return None
    if base is None:
        return "added"
    if current is None:
        return "deleted"
    return "modified" if base.hash != current.hash else "mode"


def plan(local: Files, base: Files, remote: Files) -> Plan:
    result = Plan()
    # Only paths whose state differs somewhere can move; on a large quiet tree that is few,
    # and the set difference of the items finds them without a loop in Python.
    moved = {p for p, _ in local.items() ^ base.items()} | {
        p for p, _ in remote.items() ^ base.items()
    }
    for path in sorted(moved):
        here, was, there = local.get(path), base.get(path), remote.get(path)
        local_change, remote_change = classify(was, here), classify(was, there)
        if local_change is None and remote_change is None:
            continue
        if same(here, there):
            result.converged[path] = here
        elif remote_change is None:
            assert local_change is not None
            result.push.append(Action(path, local_change, here))
        elif local_change is None:
            result.pull.append(Action(path, remote_change, there))
        else:
            result.conflicts.append(Conflict(path, local_change, remote_change, here, there))
    return result


def check_deletes(
    actions: list[Action], tracked: int, *, max_delete: int | None, force: bool, side: str
) -> None:
    """Refuse a plan that deletes more than allowed: half the tracked files by default."""
    deletes = sum(1 for a in actions if a.target is None)
    if force or deletes == 0:
        return
    allowed = max_delete if max_delete is not None else tracked // 2
    if deletes > allowed:
        raise InvalidInput(
            f"refusing to delete {deletes} of {tracked} files {side}; nothing was changed "
            f"(check the basepath, or allow it with --max-delete {deletes} or --force)"
        )
