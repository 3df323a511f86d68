"""What differs, file by file, between this node and Consul's head, this node and a kept
revision, or two kept revisions: typed results with the contents on both sides, which
`render` turns into unified diffs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fileconsul.commands import history
from fileconsul.commands.context import Context
from fileconsul.commands.status import status
from fileconsul.errors import InvalidInput, UsageError
from fileconsul.local import scan
from fileconsul.model.facts import ChangeKind, FileInfo, Files, classify, same
from fileconsul.store.layout import content_key

#: Bytes read of a local file, at most, to show it in a diff.
_LOCAL_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class Side:
    """One side of a file's diff: its facts (None: absent) and its bytes (None: absent, no
    longer kept, or, with `corrupt`, kept but not matching its hash)."""

    info: FileInfo | None
    data: bytes | None
    corrupt: bool = False


@dataclass(frozen=True)
class FileDiff:
    path: str
    #: What moved: "push: modified", "pull: added", "conflict: local modified, remote
    #: deleted", or, between two trees, the change from the old one to the new one.
    label: str
    old: Side
    new: Side
    #: What the old side (a/) and the new side (b/) are: "Consul r12", "local", "r3".
    old_name: str
    new_name: str


@dataclass
class Diff:
    files: list[FileDiff]


def selected(path: str, filters: Sequence[str]) -> bool:
    """Whether `path` is one of `filters`, or below one (a directory)."""
    if not filters:
        return True
    return any(path == f.rstrip("/") or path.startswith(f.rstrip("/") + "/") for f in filters)


def local_vs_head(ctx: Context, filters: Sequence[str]) -> Diff:
    """Every path that differs between Consul's head and this node, labelled with the way a
    push or pull would move it (or as a conflict)."""
    found = status(ctx)
    plan, seen, tree = found.plan, found.view.sides, found.view.tree
    labels: dict[str, str] = {a.path: f"push: {a.change}" for a in plan.push}
    labels |= {a.path: f"pull: {a.change}" for a in plan.pull}
    labels |= {c.path: f"conflict: local {c.local}, remote {c.remote}" for c in plan.conflicts}
    refuse_unmatched(filters, {*seen.local, *seen.remote, *seen.base})
    paths = sorted(p for p in labels if selected(p, filters))
    keys = {p: content_key(tree, p) for p in paths}
    remote_side = _read(ctx, {p: (keys[p], seen.remote.get(p)) for p in paths}, tree.values)
    local_side = _local(ctx, paths, seen.local)
    name = f"Consul r{tree.revision}" if tree.head else "Consul"
    files = []
    for p in paths:
        # Each reads as the change that would move: a pull's from here to Consul's.
        if labels[p].startswith("pull"):
            files.append(FileDiff(p, labels[p], local_side[p], remote_side[p], "local", name))
        else:
            files.append(FileDiff(p, labels[p], remote_side[p], local_side[p], name, "local"))
    return Diff(files)


def local_vs_revision(ctx: Context, revision: int, filters: Sequence[str]) -> Diff:
    """Every path that differs between kept revision `revision` and this node."""
    back = history.past(ctx, revision, what="compared")
    old = back.files_at(revision)
    local = scan.scan(ctx.basepath)
    new = {p: i for p, i in local.files.items() if not local.ignored(p)}
    paths = _differing(old, new, filters)
    old_side, new_side = _kept(ctx, back, paths, old), _local(ctx, paths, new)
    return _diff(paths, old, new, old_side, new_side, f"r{revision}", "local")


def between(ctx: Context, first: int, second: int, filters: Sequence[str]) -> Diff:
    """Every path that differs between two kept revisions."""
    back = history.past(ctx, first, second, what="compared")
    old, new = back.files_at(first), back.files_at(second)
    paths = _differing(old, new, filters)
    old_side, new_side = _kept(ctx, back, paths, old), _kept(ctx, back, paths, new)
    return _diff(paths, old, new, old_side, new_side, f"r{first}", f"r{second}")


def _diff(
    paths: list[str],
    old: Files,
    new: Files,
    old_side: Mapping[str, Side],
    new_side: Mapping[str, Side],
    old_name: str,
    new_name: str,
) -> Diff:
    return Diff(
        [
            FileDiff(p, _kind(old.get(p), new.get(p)), old_side[p], new_side[p], old_name, new_name)
            for p in paths
        ]
    )


def patch_of(ctx: Context, revision: int) -> Diff:
    """What revision `revision` changed, with the contents before and after it, where they
    are still kept."""
    return between(ctx, revision - 1, revision, []) if revision > 1 else _first(ctx)


def _first(ctx: Context) -> Diff:
    back = history.past(ctx, 1, what="shown")
    new = back.files_at(1)
    paths = sorted(new)
    return _diff(
        paths,
        {},
        new,
        {p: Side(None, None) for p in paths},
        _kept(ctx, back, paths, new),
        "r0",
        "r1",
    )


def _kind(old: FileInfo | None, new: FileInfo | None) -> ChangeKind:
    kind = classify(old, new)
    assert kind is not None
    return kind


def _differing(old: Files, new: Files, filters: Sequence[str]) -> list[str]:
    paths = set(old) | set(new)
    refuse_unmatched(filters, paths)
    return sorted(p for p in paths if selected(p, filters) and not same(old.get(p), new.get(p)))


def refuse_unmatched(filters: Sequence[str], paths: set[str]) -> None:
    """UsageError naming each filter that is no path of either side, nor a directory of one
    (as git says of a pathspec that matches no file)."""
    unmatched = [f for f in filters if not any(selected(p, [f]) for p in paths)]
    if unmatched:
        raise UsageError(
            f"{', '.join(unmatched)}: no such file or directory on either side of the diff"
        )


def _kept(ctx: Context, back: history.Past, paths: list[str], files: Files) -> dict[str, Side]:
    """Each path's side in a kept revision whose tree is `files`."""
    keys = {}
    for path in paths:
        info = files.get(path)
        key = back.key_of(info) if info is not None else None
        keys[path] = (key or "", info)
    return _read(ctx, keys, {})


def _read(
    ctx: Context, keys: Mapping[str, tuple[str, FileInfo | None]], known: Mapping[str, bytes]
) -> dict[str, Side]:
    """Each path's side, its bytes read from the key given (only when they match)."""
    wanted = {
        p: (key, info.hash)
        for p, (key, info) in keys.items()
        if info is not None and key and p not in known
    }
    found, corrupt = history.contents(ctx, wanted)
    found.update(known)
    return {
        p: Side(info, found.get(p) if info else None, p in corrupt) for p, (_, info) in keys.items()
    }


def _local(ctx: Context, paths: Sequence[str], files: Files) -> dict[str, Side]:
    sides = {}
    for path in paths:
        info = files.get(path)
        data = None
        if info is not None:
            try:
                data = scan.read_file(ctx.basepath, path, _LOCAL_LIMIT)
            except InvalidInput:
                data = None
        sides[path] = Side(info, data)
    return sides
