"""Turns results into what the operator reads: git-like text, or one JSON object."""

from __future__ import annotations

import difflib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from fileconsul.commands.diff import Diff, FileDiff, Side
from fileconsul.commands.outcome import Outcome
from fileconsul.fleet.deliver import Delivery
from fileconsul.fleet.reports import Fleet
from fileconsul.model.facts import ChangeKind, FileInfo
from fileconsul.model.plan import Action, Plan
from fileconsul.model.records import Change, Commit
from fileconsul.model.seal import Signer, age, describe_age

_WIDTH = 11
#: A push or pull lists its changes one by one up to this many; past it, a summary (and the
#: whole list with --verbose).
LIST_UP_TO = 20
#: Changes `log` lists under each revision.
LOG_CHANGES = 10


def _line(label: str, path: str, indent: str = "    ") -> str:
    return f"{indent}{label + ':':<{_WIDTH}} {path}"


# -- status -----------------------------------------------------------------------------------


def status_json(
    prefix: str, plan: Plan, *, revision: int, head: int, refusals: Sequence[str] = ()
) -> dict[str, Any]:
    return {
        "prefix": prefix,
        "in_sync": plan.in_sync and not refusals,
        "revision": revision,
        "head": head,
        "push": [{"path": a.path, "change": a.change} for a in plan.push],
        "pull": [{"path": a.path, "change": a.change} for a in plan.pull],
        "conflicts": [
            {"path": c.path, "local": c.local, "remote": c.remote} for c in plan.conflicts
        ],
        "refused": list(refusals),
    }


def status_text(
    plan: Plan,
    *,
    revision: int | None = None,
    head: int | None = None,
    refusals: Sequence[str] = (),
) -> str:
    lines: list[str] = []
    if revision is not None and head is not None:
        where = f"this node is at revision {revision}" if revision else "this node has not synced"
        lines.append(
            f"Consul is at revision {head}; {where}." if head else "Consul holds no revision yet."
        )
    if plan.in_sync and not refusals:
        return "\n".join([*lines, "Everything up-to-date."])
    if plan.push:
        lines += ["Changes to be pushed:", '  (use "fileconsul push" to send these to Consul)']
        lines += [_line(a.change, a.path) for a in plan.push]
    if plan.pull:
        lines += ["Changes to be pulled:", '  (use "fileconsul pull" to apply these locally)']
        lines += [_line(a.change, a.path) for a in plan.pull]
    if plan.conflicts:
        lines += [
            "Conflicts:",
            '  (changed on both sides: see them with "fileconsul diff"; merge by hand, or keep',
            '   one side with "fileconsul push --force" (local) or "fileconsul pull --force")',
        ]
        lines += [f"    {c.path} (local {c.local}, remote {c.remote})" for c in plan.conflicts]
    if refusals:
        lines += ["Refused (a push or pull would stop on these):"]
        lines += [f"    {why}" for why in refusals]
    return "\n".join(lines)


# -- push and pull ----------------------------------------------------------------------------


def action_line(verb: str, action: Action) -> str:
    return _line(f"{verb} {action.change}", action.path, indent="")


def _summary(actions: Sequence[Action]) -> str:
    counts = Counter(a.change for a in actions)
    order: tuple[ChangeKind, ...] = ("added", "modified", "deleted", "mode")
    return ", ".join(f"{counts[kind]:,} {kind}" for kind in order if counts[kind])


_VERBS = {"push": "push", "pull": "pull", "rollback": "roll back"}
_NOTHING = {
    "push": "Nothing to push.",
    "pull": "Already up-to-date.",
    "rollback": "Nothing to roll back: the head's tree is that revision's already.",
}


def outcome_text(command: str, outcome: Outcome, *, verbose: bool = False) -> str:
    verb = _VERBS[command]
    verb = f"would {verb}" if outcome.dry_run else verb
    actions = outcome.actions
    if verbose or len(actions) <= LIST_UP_TO:
        lines = [action_line(verb, a) for a in actions]
    else:
        lines = [f"{verb}: {_summary(actions)} (--verbose lists them)"]
    count = f"{len(actions):,} {'file' if len(actions) == 1 else 'files'}"
    if outcome.committed is not None:
        committed = outcome.committed.commit
        what = f"rolled back to r{committed.rollback_of}, " if committed.rollback_of else ""
        done = f"{what}{count}" if actions else committed.message
        lines.append(f"committed r{committed.revision}: {done}.")
    elif actions and not outcome.dry_run:
        lines.append(f"applied r{outcome.revision}: {count}.")
    elif not actions:
        lines.append(_nothing(command, outcome))
    return "\n".join(lines)


def _nothing(command: str, outcome: Outcome) -> str:
    skipped = len(outcome.skipped)
    if skipped:
        return f"Applied nothing: {skipped:,} {'path' if skipped == 1 else 'paths'} skipped."
    if command == "pull" and outcome.nothing_remote:
        return (
            f"Consul holds nothing under {outcome.prefix}/ yet: nothing to pull (check --prefix)."
        )
    return _NOTHING[command]


def outcome_json(command: str, prefix: str, outcome: Outcome) -> dict[str, Any]:
    return {
        "prefix": prefix,
        "command": command,
        "dry_run": outcome.dry_run,
        "revision": outcome.revision,
        "committed": outcome.committed is not None,
        "changes": [{"path": a.path, "change": a.change} for a in outcome.actions],
        "counts": dict(Counter(a.change for a in outcome.actions)),
        "skipped": [{"path": path, "reason": why} for path, why in outcome.skipped],
        "warnings": outcome.warnings,
    }


def delivery_json(prefix: str, delivery: Delivery) -> dict[str, Any]:
    """What a pull did, with its check and hook, as one object."""
    outcome = delivery.outcome
    data: dict[str, Any] = (
        outcome_json("pull", prefix, outcome)
        if outcome
        else {
            "prefix": prefix,
            "command": "pull",
        }
    )
    check, hook = delivery.check, delivery.hook_result
    data["check"] = None if check is None else {"exit": check.exit, "output": check.tail}
    data["hook"] = (
        None if hook is None else {"command": delivery.hook, "exit": hook.exit, "output": hook.tail}
    )
    data["held"] = outcome.held if outcome else None
    data["signer"] = outcome.signer if outcome and outcome.signer else None
    data["signed_at"] = outcome.signed_at if outcome and outcome.signer else None
    data["notes"] = delivery.notes
    data["error"] = None if delivery.error is None else str(delivery.error)
    data["exit_code"] = delivery.exit_code
    return data


# -- the fleet ------------------------------------------------------------------------------


def fleet_json(prefix: str, fleet: Fleet) -> dict[str, Any]:
    halt = fleet.halt
    return {
        "prefix": prefix,
        "revision": fleet.revision,
        "all_current": fleet.all_current,
        "counts": dict(Counter(n.state for n in fleet.nodes)),
        "halt": None
        if halt is None
        else {
            "revision": halt.revision,
            "node": halt.node,
            "time": halt.time,
            "reason": halt.reason,
            "applied_before": fleet.applied_before_halt,
        },
        "nodes": [
            {
                "node": n.report.node,
                "state": n.state,
                "revision": n.report.revision,
                "behind": max(0, fleet.revision - n.report.revision),
                "result": n.report.result,
                "time": n.report.time,
                "message": n.report.message,
                "hook_exit": n.report.hook_exit,
                "check_exit": n.report.check_exit,
                "output": n.report.output,
                "drifted": list(n.report.drifted),
                "drift_count": n.report.drift_count,
                "signer": n.report.signer or None,
                "signed_at": n.report.signed_at or None,
            }
            for n in fleet.nodes
        ],
    }


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def halt_line(fleet: Fleet) -> str:
    """The head's halt in one sentence (there must be one)."""
    halt = fleet.halt
    assert halt is not None
    applied = fleet.applied_before_halt
    return (
        f"Revision {halt.revision} is HALTED: {halt.node} stopped it at {_when(halt.time)} "
        f"({halt.reason}); {applied} {'node' if applied == 1 else 'nodes'} applied it "
        "before it stopped. A newer revision (a fix, or a rollback) or `fileconsul resume` "
        "lifts the halt."
    )


def drift_text(paths: Sequence[str], count: int) -> str:
    shown = ", ".join(paths[:5])
    more = f" and {count - min(len(paths), 5)} more" if count > min(len(paths), 5) else ""
    return f"changed here by hand: {shown}{more}"


def fleet_text(fleet: Fleet) -> str:
    lines = []
    if fleet.halt is not None:
        lines.append(halt_line(fleet))
    if not fleet.nodes:
        return "\n".join([*lines, f"Revision {fleet.revision}; no node has reported yet."])
    lines.append(f"Revision {fleet.revision}:")
    for n in fleet.nodes:
        report = n.report
        detail = f" ({report.message})" if report.message else ""
        hook = f", hook exit {report.hook_exit}" if report.hook_exit else ""
        check = f", check exit {report.check_exit}" if report.check_exit else ""
        if report.drift_count:
            detail += f" ({drift_text(report.drifted, report.drift_count)})"
        lines.append(
            f"    {n.state + ':':<{_WIDTH}} {report.node} at revision {report.revision}, "
            f"{_when(report.time)}{check}{hook}{detail}"
        )
    current = sum(1 for n in fleet.nodes if n.state == "current")
    lines.append(f"{current} of {len(fleet.nodes)} nodes current.")
    return "\n".join(lines)


def fleets_json(prefix: str, fleets: Sequence[tuple[str, Fleet]]) -> dict[str, Any]:
    return {
        "prefix": prefix,
        "datacenters": [
            {"datacenter": dc, "replica_of": fleet.source, **fleet_json(prefix, fleet)}
            for dc, fleet in fleets
        ],
    }


def fleets_text(fleets: Sequence[tuple[str, Fleet]]) -> str:
    sections = []
    for dc, fleet in fleets:
        what = f" (a replica of {fleet.source})" if fleet.source else ""
        body = fleet_text(fleet).replace("\n", "\n  ")
        sections.append(f"Datacenter {dc}{what}:\n  {body}")
    return "\n\n".join(sections)


# -- history ----------------------------------------------------------------------------------


def _facts(info: FileInfo | None) -> dict[str, Any] | None:
    return None if info is None else {"hash": info.hash, "size": info.size, "mode": info.mode}


def signer_json(found: Signer | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {"key": found.key, "trusted": found.trusted, "valid": found.valid}


def signer_text(found: Signer | None) -> str:
    if found is None:
        return "not signed"
    if found.valid is None:
        return f"signed by {found.key} (a key this node does not trust)"
    if not found.valid:
        return f"signed by {found.key}: THE SIGNATURE DOES NOT VERIFY"
    return f"signed by {found.key} (trusted)"


def signed_line(outcome: Outcome, now: float) -> str | None:
    """How old the signed head is, for a pull on a signed tree: a frozen tree shows."""
    if not outcome.signer:
        return None
    seconds = age(outcome.signed_at, now)
    return f"r{outcome.revision} signed by {outcome.signer}, {describe_age(seconds)} ago."


def commit_json(
    commit: Commit, *, facts: bool = False, signer: Signer | None = None
) -> dict[str, Any]:
    changes: list[dict[str, Any]] = []
    for change in commit.changes:
        item: dict[str, Any] = {"path": change.path, "change": change.kind}
        if facts:
            item |= {"old": _facts(change.old), "new": _facts(change.new)}
        changes.append(item)
    return {
        "revision": commit.revision,
        "time": commit.time,
        "node": commit.node,
        "user": commit.user,
        "message": commit.message,
        "rollback_of": commit.rollback_of,
        "files": commit.files,
        "signed_by": commit.signature.key if commit.signature else None,
        "signer": signer_json(signer),
        "changes": changes,
    }


def commit_text(commit: Commit, *, all_changes: bool = False, signer: Signer | None = None) -> str:
    title = f"r{commit.revision}  {commit.time}  {commit.node} ({commit.user})"
    lines = [title]
    if commit.signature is not None or signer is not None:
        lines.append(f"    {signer_text(signer)}")
    if commit.message:
        lines += [f"    {line}" for line in commit.message.splitlines()]
    if commit.rollback_of:
        lines.append(f"    (rolled back to r{commit.rollback_of})")
    shown = commit.changes if all_changes else commit.changes[:LOG_CHANGES]
    lines += [_change_line(c) for c in shown]
    left = len(commit.changes) - len(shown)
    if left:
        lines.append(f"    ... and {left:,} more (fileconsul show {commit.revision})")
    return "\n".join(lines)


def _change_line(change: Change) -> str:
    return _line(change.kind, change.path)


# -- diffs ------------------------------------------------------------------------------------


def diff_text(diff: Diff) -> str:
    return "".join(line for f in diff.files for line in _file_diff(f))


def _file_diff(f: FileDiff) -> Iterator[str]:
    a, b = f"a/{f.path}", f"b/{f.path}"
    yield f"diff {a} {b}  ({f.label})\n"
    old, new = f.old, f.new
    if old.info is None and new.info is not None:
        yield f"new file mode {_mode(new.info)}\n"
    elif new.info is None and old.info is not None:
        yield f"deleted file mode {_mode(old.info)}\n"
    elif old.info is not None and new.info is not None and old.info.mode != new.info.mode:
        yield f"old mode {_mode(old.info)}\nnew mode {_mode(new.info)}\n"
    if old.info is not None and new.info is not None and old.info.hash == new.info.hash:
        return
    a_name = f"{a}\t({f.old_name})" if old.info else "/dev/null"
    b_name = f"{b}\t({f.new_name})" if new.info else "/dev/null"
    for side, name, where in ((old, a, f.old_name), (new, b, f.new_name)):
        if side.info is not None and side.data is None:
            why = "is corrupt in Consul" if side.corrupt else "is no longer kept"
            yield f"(the content of {name} in {where} {why})\n"
            return
    if not (_is_text(old) and _is_text(new)):
        a_shown = a if old.info else "/dev/null"
        b_shown = b if new.info else "/dev/null"
        yield f"Binary files {a_shown} and {b_shown} differ\n"
        return
    yield from _unified(old.data or b"", new.data or b"", a_name, b_name)


def _mode(info: FileInfo) -> str:
    return f"100{info.mode:o}"


def _is_text(side: Side) -> bool:
    data = side.data or b""
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _unified(old: bytes, new: bytes, a_name: str, b_name: str) -> Iterator[str]:
    a = old.decode("utf-8").splitlines(keepends=True)
    b = new.decode("utf-8").splitlines(keepends=True)
    for line in difflib.unified_diff(a, b, a_name, b_name):
        yield line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
