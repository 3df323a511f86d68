"""What a push or pull refuses before it writes anything, each said at once: names that
cannot be keys, files over the value limit, deletions over the cap, a prefix nested in another
tree. `status` reports all of them: it is the preflight of a push or pull."""

from __future__ import annotations

from collections.abc import Sequence

from fileconsul.commands.context import Context
from fileconsul.commands.pipeline import View
from fileconsul.errors import InvalidInput, ReplicaRefused
from fileconsul.local.scan import IGNORE_FILE, Scan
from fileconsul.model import plan as planner
from fileconsul.model import replica
from fileconsul.model.paths import META_SUFFIX
from fileconsul.model.plan import Action, Plan
from fileconsul.model.tree import RemoteTree
from fileconsul.store.layout import head_key, legacy_manifest_key


def refusals(ctx: Context, view: View, planned: Plan) -> list[str]:
    """Everything a push or pull would refuse: names that cannot be keys (here and in
    Consul), files over the value limit, deletions over the cap; each once."""
    found = [f"local file {path!r}: {why}" for path, why in view.local.unsafe]
    found += [
        f"local file {path!r} has mode {mode:04o}: {SPECIAL_BITS}"
        for path, mode in view.local.special
    ]
    found += [f"key {key!r} in Consul: {why}" for key, why in view.tree.unsafe]
    pushes = planned.pushes(force=False)
    if any(a.target is not None for a in pushes):
        limit = ctx.client.max_value_size()
        found += [
            f"{path} is {size} bytes, over Consul's {limit}-byte value limit"
            for path, size in planner.oversized(pushes, limit)
        ]
    for side in ("push", "pull"):
        actions = planned.actions(side, force=False)
        before = view.sides.changing(side)
        cap = planner.delete_cap(actions, before, side=side, max_delete=None, force=False)
        if cap is not None:
            found.append(cap.reason)
    return list(dict.fromkeys(found))


def refuse_nested(ctx: Context, tree: RemoteTree) -> None:
    """InvalidInput when the prefix is inside another fileconsul tree, or holds one below it:
    each tree's history, lock and reports would be the other's files."""
    inner = sorted(
        key
        for key, _ in tree.unsafe
        if any(segment.endswith(META_SUFFIX) for segment in key[len(ctx.prefix) + 1 :].split("/"))
    )
    outer = [a for a in _ancestors(ctx.prefix) if _has_tree(ctx, a)]
    if outer:
        raise InvalidInput(
            f"push refused: {ctx.prefix} is inside the fileconsul tree {outer[-1]}; nothing was "
            f"pushed (use a prefix beside it, not below it)"
        )
    if inner:
        raise InvalidInput(
            f"push refused: {ctx.prefix} holds another fileconsul tree below it ({inner[0]}); "
            "nothing was pushed (move one of the two trees beside the other)"
        )


def _ancestors(prefix: str) -> list[str]:
    parts = prefix.split("/")
    return ["/".join(parts[:n]) for n in range(1, len(parts))]


def _has_tree(ctx: Context, prefix: str) -> bool:
    for key in (head_key(prefix), legacy_manifest_key(prefix)):
        names, _ = ctx.client.keys(key)
        if key in names:
            return True
    return False


def refuse_replica(tree: RemoteTree) -> None:
    """ReplicaRefused when the tree is a replica of another datacenter's: only its
    replicator commits there (the commit checks it again, against a race)."""
    refused = replica.refusal(tree.head, tree.prefix)
    if refused is not None:
        raise ReplicaRefused(refused)


#: Why a file with a special bit is refused.
SPECIAL_BITS = "fileconsul does not carry the setuid, setgid or sticky bit"


def refuse_unsafe_names(local: Scan) -> None:
    """InvalidInput naming every local file whose name cannot be a key, or whose mode has a
    bit fileconsul does not carry."""
    if local.unsafe:
        names = "; ".join(f"{path!r} ({why})" for path, why in local.unsafe)
        raise InvalidInput(
            f"push refused, file names that cannot be Consul keys: {names}; nothing was "
            f"pushed (rename them or add them to {IGNORE_FILE})"
        )
    if local.special:
        names = "; ".join(f"{path!r} ({mode:04o})" for path, mode in local.special)
        raise InvalidInput(
            f"push refused, {SPECIAL_BITS}: {names}; nothing was pushed (clear the bit, for "
            f"example with chmod u-s,g-s,-t, or add the file to {IGNORE_FILE})"
        )


def refuse_too_large(actions: Sequence[Action], limit: int) -> None:
    """InvalidInput naming every file to send that is over Consul's value limit."""
    large = planner.oversized(actions, limit)
    if large:
        names = "; ".join(f"{path} is {size} bytes" for path, size in large)
        raise InvalidInput(
            f"push refused, files over Consul's {limit}-byte value limit: {names}; nothing "
            f"was pushed (add them to {IGNORE_FILE} or shrink them)"
        )
