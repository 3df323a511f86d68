"""What a push or pull refuses before it writes anything, each said at once: names that
cannot be keys, files over the value limit, deletions over the cap, a prefix nested in another
tree. `status` reports all of them: it is the preflight of a push or pull."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fileconsul import scan
from fileconsul.errors import InvalidInput
from fileconsul.keys import META_SUFFIX, head_key, legacy_manifest_key
from fileconsul.plan import Action, Plan, check_deletes
from fileconsul.remote import RemoteTree
from fileconsul.run import Run

if TYPE_CHECKING:
    from fileconsul.sync import Sides


def refusals(run: Run, local: scan.Scan, tree: RemoteTree, planned: Plan, seen: Sides) -> list[str]:
    """Everything a push or pull would refuse: names that cannot be keys (here and in
    Consul), files over the value limit, deletions over the cap; each once."""
    found = [f"local file {path!r}: {why}" for path, why in local.unsafe]
    found += [f"key {key!r} in Consul: {why}" for key, why in tree.unsafe]
    pushes = planned.pushes(force=False)
    if any(a.target is not None for a in pushes):
        limit = run.client.max_value_size()
        found += [
            f"{a.path} is {a.target.size} bytes, over Consul's {limit}-byte value limit"
            for a in pushes
            if a.target is not None and a.target.size > limit
        ]
    for actions, tracked, side in (
        (pushes, len(seen.remote), "in Consul"),
        (planned.pulls(force=False), len(seen.local), "locally"),
    ):
        try:
            check_deletes(actions, tracked, max_delete=None, force=False, side=side)
        except InvalidInput as exc:
            found.append(str(exc).split("; ")[0])
    return list(dict.fromkeys(found))


def refuse_nested(run: Run, tree: RemoteTree) -> None:
    """InvalidInput when the prefix is inside another fileconsul tree, or holds one below it:
    each tree's history, lock and reports would be the other's files."""
    inner = sorted(
        key
        for key, _ in tree.unsafe
        if any(segment.endswith(META_SUFFIX) for segment in key[len(run.prefix) + 1 :].split("/"))
    )
    outer = [a for a in _ancestors(run.prefix) if _has_tree(run, a)]
    if outer:
        raise InvalidInput(
            f"push refused: {run.prefix} is inside the fileconsul tree {outer[-1]}; nothing was "
            f"pushed (use a prefix beside it, not below it)"
        )
    if inner:
        raise InvalidInput(
            f"push refused: {run.prefix} holds another fileconsul tree below it ({inner[0]}); "
            "nothing was pushed (move one of the two trees beside the other)"
        )


def _ancestors(prefix: str) -> list[str]:
    parts = prefix.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def _has_tree(run: Run, prefix: str) -> bool:
    for key in (head_key(prefix), legacy_manifest_key(prefix)):
        names, _ = run.client.keys(key)
        if key in names:
            return True
    return False


def refuse_unsafe_names(local: scan.Scan) -> None:
    """InvalidInput naming every local file whose name cannot be a key."""
    if local.unsafe:
        names = "; ".join(f"{path!r} ({why})" for path, why in local.unsafe)
        raise InvalidInput(
            f"push refused, file names that cannot be Consul keys: {names}; nothing was "
            f"pushed (rename them or add them to {scan.IGNORE_FILE})"
        )


def refuse_too_large(actions: list[Action], limit: int) -> None:
    """InvalidInput naming every file to send that is over Consul's value limit."""
    large = [a for a in actions if a.target is not None and a.target.size > limit]
    if large:
        names = "; ".join(f"{a.path} is {a.target.size} bytes" for a in large if a.target)
        raise InvalidInput(
            f"push refused, files over Consul's {limit}-byte value limit: {names}; nothing "
            f"was pushed (add them to {scan.IGNORE_FILE} or shrink them)"
        )
