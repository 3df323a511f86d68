"""Turns results into what the operator reads: git-like text, or one JSON object."""

from __future__ import annotations

import time
from typing import Any

from fileconsul.fleet import FleetNode
from fileconsul.plan import Action, Plan
from fileconsul.sync import Outcome

_WIDTH = 11


def status_json(prefix: str, plan: Plan) -> dict[str, Any]:
    return {
        "prefix": prefix,
        "in_sync": plan.in_sync,
        "push": [{"path": a.path, "change": a.change} for a in plan.push],
        "pull": [{"path": a.path, "change": a.change} for a in plan.pull],
        "conflicts": [
            {"path": c.path, "local": c.local, "remote": c.remote} for c in plan.conflicts
        ],
    }


def _line(label: str, path: str, indent: str = "    ") -> str:
    return f"{indent}{label + ':':<{_WIDTH}} {path}"


def status_text(plan: Plan) -> str:
    if plan.in_sync:
        return "Everything up-to-date."
    lines: list[str] = []
    if plan.push:
        lines += ["Changes to be pushed:", '  (use "fileconsul push" to send these to Consul)']
        lines += [_line(a.change, a.path) for a in plan.push]
    if plan.pull:
        lines += ["Changes to be pulled:", '  (use "fileconsul pull" to apply these locally)']
        lines += [_line(a.change, a.path) for a in plan.pull]
    if plan.conflicts:
        lines += [
            "Conflicts:",
            "  (changed on both sides: merge by hand, or keep one side with",
            '   "fileconsul push --force" (local) or "fileconsul pull --force" (remote))',
        ]
        lines += [f"    {c.path} (local {c.local}, remote {c.remote})" for c in plan.conflicts]
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


def fleet_json(prefix: str, revision: int, nodes: list[FleetNode]) -> dict[str, Any]:
    return {
        "prefix": prefix,
        "revision": revision,
        "all_current": bool(nodes) and all(n.state == "current" for n in nodes),
        "nodes": [
            {
                "node": n.report.node,
                "state": n.state,
                "revision": n.report.revision,
                "result": n.report.result,
                "time": n.report.time,
                "message": n.report.message,
                "hook_exit": n.report.hook_exit,
            }
            for n in nodes
        ],
    }


def fleet_text(revision: int, nodes: list[FleetNode]) -> str:
    if not nodes:
        return f"Revision {revision}; no node has reported yet."
    lines = [f"Revision {revision}:"]
    for n in nodes:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(n.report.time))
        detail = f" ({n.report.message})" if n.report.message else ""
        hook = f", hook exit {n.report.hook_exit}" if n.report.hook_exit else ""
        lines.append(
            f"    {n.state + ':':<{_WIDTH}} {n.report.node} at revision {n.report.revision}, "
            f"{when}{hook}{detail}"
        )
    current = sum(1 for n in nodes if n.state == "current")
    lines.append(f"{current} of {len(nodes)} nodes current.")
    return "\n".join(lines)
