"""Signatures in the commands: a pull applies only what a trusted key signed, byte for byte;
a signing push builds on the signed revision it can verify, and puts back what another tool
wrote over it."""

from __future__ import annotations

from dataclasses import replace

from fileconsul.commands.context import Context
from fileconsul.errors import FileconsulError, IntegrityError, Untrusted
from fileconsul.local.record import Record
from fileconsul.model import seal
from fileconsul.model.facts import Files, content_hash
from fileconsul.model.plan import Action
from fileconsul.model.records import Commit
from fileconsul.model.seal import Trust, Verified
from fileconsul.model.tree import KnownTree, RemoteTree
from fileconsul.store import read, sealed

#: Foreign keys a refusal names, at most.
_NAMED = 5


def refuse_untrusted(ctx: Context, tree: RemoteTree, held: int) -> None:
    """Untrusted when a node that trusts keys would apply anything but the signed tree: keys
    written over it by another tool, or no signed head at all where there is a tree."""
    if ctx.trust is None:
        return
    if tree.head is None and (tree.files or held or tree.legacy_index or tree.orphaned):
        raise Untrusted(
            f"{ctx.prefix} has no signed head (its head is gone, or it was never signed): "
            "nothing was changed"
        )
    if tree.foreign:
        shown = ", ".join(tree.foreign[:_NAMED])
        more = f" and {len(tree.foreign) - _NAMED} more" if len(tree.foreign) > _NAMED else ""
        raise Untrusted(
            f"{len(tree.foreign)} keys under {ctx.prefix}/ hold what the signed head "
            f"r{tree.revision} does not ({shown}{more}): written by another tool; nothing was "
            "changed (the next signed push puts them back)"
        )


def as_untrusted(ctx: Context, error: FileconsulError) -> FileconsulError:
    """On a node that trusts keys, every integrity failure is untrusted: it cannot tell a
    corrupt value from a tampered one."""
    if ctx.trust is not None and isinstance(error, IntegrityError):
        return error if isinstance(error, Untrusted) else Untrusted(str(error))
    return error


def with_strong(ctx: Context, tree: RemoteTree, actions: list[Action]) -> RemoteTree:
    """The tree with the signed strong hash of every content `actions` write (a path not
    changed since the revision this node held, put back by --heal, is read from its table)."""
    verified = tree.verified
    if verified is None:
        return tree
    wanted = {a.path for a in actions if a.target is not None}
    if wanted <= verified.strong.keys():
        return tree
    strong = sealed.strong_of(ctx.client, ctx.prefix, verified, wanted)
    return replace(tree, verified=replace(verified, strong={**verified.strong, **strong}))


def check_value(tree: RemoteTree, path: str, data: bytes) -> None:
    """Untrusted unless `data` is what the signature covers for `path` (on a signed tree
    read with trusted keys; on any other, nothing to check)."""
    if tree.verified is not None:
        seal.check_value(path, data, tree.verified.strong)


def check_restored(tree: RemoteTree, commits: list[Commit], wanted: dict[str, bytes]) -> None:
    """Untrusted unless each content a signing rollback restores is the one signed then:
    the strong hash the first later change of its path replaced, else the head's."""
    verified = tree.verified
    assert verified is not None
    expected: dict[str, str] = {}
    for commit in sorted(commits, key=lambda c: c.revision):
        for change in commit.changes:
            if change.path in wanted and change.path not in expected:
                expected[change.path] = change.old_strong
    for path, data in wanted.items():
        strong = expected.get(path, verified.strong.get(path, ""))
        if strong in ("", seal.UNKNOWN) or seal.strong_hash(data) != strong:
            raise Untrusted(
                f"the content of {path} to restore is not one a trusted key signed (it "
                "predates signing, or was replaced in Consul); nothing was rolled back"
            )


# -- a signing push ------------------------------------------------------------------------


def signing_trust(ctx: Context) -> Trust:
    """What a signing push trusts: its own key, and the keys this node trusts."""
    assert ctx.signer is not None
    own = ctx.signer.public
    others = ctx.trust.keys if ctx.trust is not None else ()
    return Trust((own, *(k for k in others if k != own)))


def read_to_sign(ctx: Context, record: Record, session: str | None = None) -> RemoteTree:
    """The tree a signing push builds on: the signed head, verified; else (the head is not
    signed by a trusted key, or was written back) the signed revision this node holds, with
    what changed since as foreign keys to put back; else, on a tree never signed as far as
    this node knows, the tree as it is (the push vouches for every file as it holds it)."""
    known = record.remote
    try:
        return read.read(
            ctx.client,
            ctx.prefix,
            known=known,
            lock_wait=ctx.lock_wait,
            session=session,
            trust=signing_trust(ctx),
            held=record.revision,
        )
    except Untrusted as exc:
        raw = read.read(
            ctx.client, ctx.prefix, known=known, lock_wait=ctx.lock_wait, session=session
        )
        if known is not None and known.sealed is not None:
            return based_on(raw, known, str(exc))
        if raw.head is None or raw.head.signature is None:
            return raw
        raise


def based_on(raw: RemoteTree, known: KnownTree, why: str) -> RemoteTree:
    """The tree of the signed revision this node holds, under the head as Consul has it:
    every key that holds something else is foreign, and the commit is numbered after both."""
    assert known.sealed is not None
    files = dict(known.files)
    changed = {p for p, _ in raw.files.items() ^ files.items()}
    foreign = sorted(changed | raw.late | raw.adopt)
    values = {
        p: v
        for p, v in raw.values.items()
        if p in files and p not in foreign and content_hash(v) == files[p].hash
    }
    note = (
        f"{why.rstrip('.')}. This push builds on r{known.revision}, the last signed "
        "revision this node holds, and puts back what changed since"
    )
    return replace(
        raw,
        committed=files,
        files=dict(files),
        values=values,
        adopt=frozenset(),
        verified=Verified(known.revision, known.sealed),
        foreign=tuple(foreign),
        floor=max(known.revision, raw.revision),
        warnings=(note, *raw.warnings),
        wiped=False,
    )


def put_back(tree: RemoteTree, local: Files, after: Files) -> tuple[list[str], list[str]]:
    """Of the foreign keys of a signed tree: those a signing push sets back (to this node's
    copy, which is the signed content, or deleted when the tree has no such file), and those
    it cannot (this node does not hold them as signed)."""
    done, left = [], []
    for path in tree.foreign:
        target = after.get(path)
        mine = local.get(path)
        if target is None or (mine is not None and mine.hash == target.hash):
            done.append(path)
        else:
            left.append(path)
    return done, left
