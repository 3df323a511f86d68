"""Turns results into what the operator reads: git-like text, or one JSON object."""

from __future__ import annotations

from typing import Any

from fileconsul.plan import Action, Plan
from fileconsul.sync import Outcome

_WIDTH = 11


def status_json(prefix: str, p: Plan) -> dict[str, Any]:
    return {
        "prefix": prefix,
        "in_sync": p.in_sync,
        "push": [{"path": a.path, "change": a.change} for a in p.push],
        "pull": [{"path": a.path, "change": a.change} for a in p.pull],
        "conflicts": [{"path": c.path, "local": c.local, "remote": c.remote} for c in p.conflicts],
    }


def _line(label: str, path: str, indent: str = "    ") -> str:
    return f"{indent}{label + ':':<{_WIDTH}} {path}"


def status_text(p: Plan) -> str:
    if p.in_sync:
        return "Everything up-to-date."
    lines: list[str] = []
    if p.push:
        lines += ["Changes to be pushed:", '  (use "fileconsul push" to send these to Consul)']
        lines += [_line(a.change, a.path) for a in p.push]
    if p.pull:
        lines += ["Changes to be pulled:", '  (use "fileconsul pull" to apply these locally)']
        lines += [_line(a.change, a.path) for a in p.pull]
    if p.conflicts:
        lines += [
            "Conflicts:",
            "  (changed on both sides: merge by hand, or keep one side with",
            '   "fileconsul push --force" (local) or "fileconsul pull --force" (remote))',
        ]
        lines += [f"    {c.path} (local {c.local}, remote {c.remote})" for c in p.conflicts]
    return "\n".join(lines)


def action_line(verb: str, action: Action) -> str:
    return _line(f"{verb} {action.change}", action.path, indent="")


def outcome_text(command: str, outcome: Outcome) -> str:
    verb = f"would {command}" if outcome.dry_run else command
    lines = [action_line(verb, a) for a in outcome.actions]
    if not outcome.actions:
        lines.append("Already up-to-date." if command == "pull" else "Nothing to push.")
    elif not outcome.dry_run:
        noun = "change" if len(outcome.actions) == 1 else "changes"
        done = "pushed" if command == "push" else "pulled"
        lines.append(f"{len(outcome.actions)} {noun} {done} (revision {outcome.revision}).")
    return "\n".join(lines)
