"""The pure three-way planner: (local, base, remote) -> what to push, pull, or refuse.

No I/O here. The base is the local record of the last synced state; with no record it is
empty, so equal files count as synced and different ones as conflicts. What a push or pull
refuses (a conflict, too many deletes, a file over the value limit) is decided here as a
reason; the commands raise it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from fileconsul.model.facts import ChangeKind, FileInfo, Files, classify, same
from fileconsul.model.tree import RemoteTree

Side = Literal["push", "pull"]


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

    def actions(self, side: Side, *, force: bool) -> list[Action]:
        return self.pushes(force=force) if side == "push" else self.pulls(force=force)


def plan(local: Files, base: Files, remote: Files, moved: Collection[str] | None = None) -> Plan:
    """The plan of every path whose state differs somewhere (`moved`, when the caller knows
    them: every other path is the same on the three sides)."""
    result = Plan()
    if moved is None:
        # On a large quiet tree few paths differ, and the set difference of the items finds
        # them without a loop in Python.
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


# -- the three sides a plan compares ----------------------------------------------------------


@dataclass(frozen=True)
class Sides:
    """The three trees a plan compares, as this node sees them: its ignore rules hide paths
    from all three, and a tree another tool deleted whole counts as unchanged."""

    local: Mapping[str, FileInfo]
    base: Mapping[str, FileInfo]
    remote: Mapping[str, FileInfo]
    #: Tracked paths that this node's ignore rules now cover.
    newly_ignored: list[str]
    #: The files under the prefix were deleted by another tool (not by a commit).
    gone: bool
    #: The only paths that may differ between the sides, when the scan looked at no other.
    moved: frozenset[str] | None = None

    def changing(self, side: Side) -> Mapping[str, FileInfo]:
        """The tree a plan changes on `side` (Consul's for a push, this node's for a pull):
        the base of its delete cap."""
        return self.remote if side == "push" else self.local

    def planned(self) -> Plan:
        return plan(self.local, self.base, self.remote, self.moved)


def sides(
    local: Mapping[str, FileInfo],
    ignored: Callable[[str], bool],
    base: Mapping[str, FileInfo],
    record_exists: bool,
    tree: RemoteTree,
    *,
    checked: Collection[str] | None = None,
) -> Sides:
    """The sides from this node's files, its ignore rules, its record's base and the tree.
    With `checked`, only those paths are matched against the ignore rules (the rest were, by
    the whole scan that made the base)."""

    def seen(files: Files) -> dict[str, FileInfo]:
        if checked is None:
            return {p: i for p, i in files.items() if not ignored(p)}
        hidden = {p for p in checked if p in files and ignored(p)}
        return {p: i for p, i in files.items() if p not in hidden} if hidden else dict(files)

    kept = seen(base)
    gone = tree.wiped or (
        tree.head is None
        and not tree.legacy_index
        and not tree.files
        and not tree.unsafe
        and record_exists
        and bool(base)
    )
    newly_ignored = sorted(set(base) - set(kept))
    remote = dict(kept) if gone else seen(tree.files)
    moved = None if checked is None or gone else frozenset(checked)
    return Sides(local, kept, remote, newly_ignored, gone, moved)


def recreating(seen: Sides) -> Sides:
    """A push into a tree another tool deleted whole: every local file is sent again."""
    return Sides(seen.local, {}, {}, seen.newly_ignored, True)


# -- what a push or pull refuses --------------------------------------------------------------


def conflict_refusal(planned: Plan, side: Side) -> str:
    """Why a push or pull stops on the plan's conflicts (there must be some)."""
    paths = ", ".join(c.path for c in planned.conflicts[:5])
    more = f" and {len(planned.conflicts) - 5} more" if len(planned.conflicts) > 5 else ""
    winner = "local" if side == "push" else "remote"
    return (
        f"{side} refused: {paths}{more} changed on both sides; nothing was changed "
        f"(see them with `fileconsul diff`; resolve them, or run {side} --force to "
        f"keep the {winner} version)"
    )


class DeleteCap(NamedTuple):
    """A plan that deletes more than allowed: half the tracked files, by default."""

    deletes: int
    tracked: int
    where: str

    @property
    def reason(self) -> str:
        return f"refusing to delete {self.deletes} of {self.tracked} files {self.where}"

    @property
    def message(self) -> str:
        return (
            f"{self.reason}; nothing was changed (check the basepath, or allow it with "
            f"--max-delete {self.deletes} or --force)"
        )


def delete_cap(
    actions: Sequence[Action],
    before: Mapping[str, FileInfo],
    *,
    side: Side,
    max_delete: int | None,
    force: bool,
) -> DeleteCap | None:
    """The cap `actions` break on the tree `before`, or None when they may go. A file deleted
    where another with its content is added is a rename, not a loss: it does not count."""
    added = Counter(a.target.hash for a in actions if a.target is not None and a.change == "added")
    deletes = 0
    for action in actions:
        if action.target is not None:
            continue
        old = before.get(action.path)
        if old is not None and added[old.hash] > 0:
            added[old.hash] -= 1
        else:
            deletes += 1
    if force or deletes == 0:
        return None
    tracked = len(before)
    allowed = max_delete if max_delete is not None else tracked // 2
    if deletes <= allowed:
        return None
    return DeleteCap(deletes, tracked, "in Consul" if side == "push" else "locally")


def oversized(actions: Sequence[Action], limit: int) -> list[tuple[str, int]]:
    """(path, size) of each file to send that is over Consul's value limit."""
    return [(a.path, a.target.size) for a in actions if a.target and a.target.size > limit]


def lost_history(tree: RemoteTree) -> str | None:
    """Why nothing can be planned on a tree whose head is gone while its history remains."""
    if tree.orphaned is None:
        return None
    first, last = tree.orphaned
    return (
        f"the head of {tree.prefix} is missing, but revisions {first} to {last} of its history "
        "remain: it was deleted or lost, and a new history must not read the old one; nothing "
        "was changed. Restore the head from a backup of the KV store, or start a new history "
        "from a node that holds the files with `fileconsul push --new-history` (its revisions "
        "follow the old ones; the files stay, the old records and kept contents are deleted)"
    )


def unknown_tree(tree: RemoteTree) -> str | None:
    """Why nothing can be applied on a tree whose committed facts cannot be known."""
    if not tree.unknown:
        return None
    return (
        f"Consul's tree at revision {tree.revision} cannot be known on this node (its "
        "manifest is corrupt and the records kept do not rebuild it); nothing was changed: run "
        "`fileconsul push` on a node that holds the tree, and it writes a new manifest"
    )


def needs_commit(actions: Sequence[Action], tree: RemoteTree, seen: Sides) -> bool:
    """Changes to send, keys another tool wrote to adopt, a tree without a revision yet, a
    push that never committed to undo, or a tree to re-create."""
    first = tree.head is None and bool(tree.files)
    return bool(actions or tree.adopt or first or tree.uncommitted or seen.gone)
