"""log, show, diff and rollback: the tree's history."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import click

from fileconsul.cli import render
from fileconsul.cli.base import (
    DRY_RUN,
    JSON,
    MAX_DELETE,
    MESSAGE,
    NODE,
    cli,
    common_options,
    open_run,
)
from fileconsul.cli.key_commands import SIGN_KEY, TRUSTED_KEYS, signed
from fileconsul.cli.sync_commands import FORCE, print_outcome
from fileconsul.commands import diff as diffs
from fileconsul.commands import history as revisions
from fileconsul.commands import rollback as rollbacks
from fileconsul.errors import EXIT_CHANGES, IntegrityError, UsageError
from fileconsul.model.records import Commit

_REVISION = re.compile(r"r?([0-9]+)")


def _revision(text: str) -> int:
    match = _REVISION.fullmatch(text)
    if match is None:
        raise UsageError(f"{text!r} is not a revision: write it as 12 or r12")
    return int(match.group(1))


class Revision(click.ParamType[int, object]):
    name = "REV"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return _revision(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


@cli.command()
@common_options
@click.option(
    "-n", "limit", type=click.IntRange(min=1), metavar="N", help="Show the last N revisions."
)
@TRUSTED_KEYS
@JSON
@click.pass_context
def log(ctx: click.Context, limit: int | None, trusted_keys: Path | None, as_json: bool) -> None:
    """List the kept revisions, newest first: who, when, why, what changed, and who signed
    it (whether this node trusts that key and signature, with --trusted-keys).

    \b
    Examples:
      fileconsul log -n 5
      fileconsul log --json --trusted-keys /etc/fileconsul/trusted/
    """
    with open_run(ctx, local=False) as (run, out):
        run = signed(run, trusted_keys=trusted_keys)
        history = revisions.log(run, limit)
    head = history.head.revision if history.head else 0
    signers = {
        c.revision: revisions.signer_of(run, history.head, c)
        for c in history.commits
        if history.head is not None
    }
    entries: list[tuple[int, Commit | revisions.Unreadable]] = [
        *((c.revision, c) for c in history.commits),
        *((u.revision, u) for u in history.unreadable),
    ]
    entries.sort(key=lambda item: -item[0])
    if as_json:
        listed = [
            render.commit_json(e, signer=signers.get(e.revision))
            if isinstance(e, Commit)
            else {"revision": e.revision, "unreadable": e.reason}
            for _, e in entries
        ]
        out.json({"prefix": history.prefix, "head": head, "revisions": listed})
    elif not entries:
        out.out(f"{history.prefix} has no revision yet.")
    else:
        out.out(
            "\n\n".join(
                render.commit_text(e, all_changes=out.verbose, signer=signers.get(e.revision))
                if isinstance(e, Commit)
                else f"r{e.revision}  (unreadable) {e.reason}"
                for _, e in entries
            )
        )
    for unreadable in history.unreadable:
        out.error(unreadable.reason)
    ctx.exit(IntegrityError.exit_code if history.unreadable else 0)


@cli.command()
@common_options
@click.argument("revision", type=Revision())
@JSON
@click.option("--patch", is_flag=True, help="Also show the unified diff of what it changed.")
@TRUSTED_KEYS
@click.pass_context
def show(
    ctx: click.Context, revision: int, as_json: bool, patch: bool, trusted_keys: Path | None
) -> None:
    """Show one revision: who made it, when, why, every change, and who signed it.

    \b
    Examples:
      fileconsul show 12
      fileconsul show r12 --patch --trusted-keys /etc/fileconsul/trusted/
    """
    with open_run(ctx, local=False) as (run, out):
        run = signed(run, trusted_keys=trusted_keys)
        head, commit = revisions.commit_of(run, revision)
        changes = diffs.patch_of(run, revision) if patch else None
        found = revisions.signer_of(run, head, commit)
    if as_json:
        data = render.commit_json(commit, facts=True, signer=found)
        if changes is not None:
            data["patch"] = render.diff_text(changes)
        out.json(data)
        return
    out.out(render.commit_text(commit, all_changes=True, signer=found))
    if changes is not None:
        click.echo("\n" + render.diff_text(changes), nl=False)


@cli.command(context_settings={"ignore_unknown_options": False})
@common_options
@click.argument("args", nargs=-1, metavar="[REV [REV2]] [PATH...]")
@click.pass_context
def diff(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Show unified diffs: this node against Consul's head, against a kept revision REV, or
    REV against REV2; only PATHs (files or directories) when given.

    A revision is written 12 or r12; a path that looks like one is written ./12. A PATH is
    taken from the working directory when it is inside the basepath (as git does), else from
    the basepath; one outside the basepath, or that matches no file, is a usage error (exit 2).
    Exits 0 when nothing differs, 1 when something does.

    \b
    Examples:
      fileconsul diff
      fileconsul diff 12 conf/
      fileconsul diff r11 r12
    """
    found: list[int] = []
    for arg in args[:2]:
        if _REVISION.fullmatch(arg) is None:
            break
        found.append(_revision(arg))
    with open_run(ctx, local=len(found) < 2) as (run, out):
        paths = tree_paths(args[len(found) :], run.basepath)
        if not found:
            result = diffs.local_vs_head(run, paths)
        elif len(found) == 1:
            result = diffs.local_vs_revision(run, found[0], paths)
        else:
            result = diffs.between(run, found[0], found[1], paths)
    if result.files and not out.quiet:
        click.echo(render.diff_text(result), nl=False)
    ctx.exit(EXIT_CHANGES if result.files else 0)


def tree_paths(given: Sequence[str], basepath: Path) -> list[str]:
    """The tree paths that command-line paths name: relative to the working directory when it
    is inside the basepath, else to the basepath; absolute ones as they are. UsageError for
    one outside the basepath. The basepath itself names the whole tree (no path)."""
    base = basepath.resolve()
    here = Path.cwd().resolve()
    start = here if here == base or base in here.parents else base
    found = []
    for text in given:
        target = Path(os.path.normpath(start / text))
        try:
            rel = target.relative_to(base)
        except ValueError:
            raise UsageError(
                f"{text} is outside the basepath {basepath}; nothing to compare"
            ) from None
        if rel == Path("."):
            return []
        found.append(rel.as_posix())
    return found


@cli.command()
@common_options
@click.argument("revision", type=Revision())
@MESSAGE
@DRY_RUN
@FORCE
@MAX_DELETE
@SIGN_KEY
@TRUSTED_KEYS
@JSON
@NODE
@click.pass_context
def rollback(
    ctx: click.Context,
    revision: int,
    message: str,
    dry_run: bool,
    force: bool,
    max_delete: int | None,
    sign_key: Path | None,
    trusted_keys: Path | None,
    as_json: bool,
    node: str | None,
) -> None:
    """Commit a new revision whose tree is exactly revision REV's.

    Contents, modes, and the files REV did not have (deleted) are restored in Consul, as one
    commit like any push; every node then pulls it as it pulls any change. This node's files
    are not touched.

    \b
    Examples:
      fileconsul rollback 12 --dry-run
      fileconsul rollback r12 -m "the ntp change broke the fleet"
      fileconsul rollback 12 --sign-key /etc/fileconsul/release.key
    """
    options = rollbacks.RollbackOptions(message, dry_run, force, max_delete, node)
    with open_run(ctx, local=False) as (run, out):
        run = signed(run, sign_key=sign_key, trusted_keys=trusted_keys)
        outcome = rollbacks.rollback(run, revision, options)
    print_outcome(out, "rollback", outcome, as_json, run.prefix)
