"""What the operator reads: status text."""

from __future__ import annotations

import json

from fileconsul.cli import render
from fileconsul.model.plan import plan
from tests.model.values import info


def test_status_text_lists_each_direction_and_the_conflicts() -> None:
    base = {"m": info(b"1"), "c": info(b"1")}
    local = {"m": info(b"2"), "c": info(b"mine"), "new": info(b"n")}
    remote_files = {"m": info(b"1"), "c": info(b"theirs"), "r": info(b"r")}
    text = render.status_text(plan(local, base, remote_files))
    assert text.splitlines() == [
        "Changes to be pushed:",
        '  (use "fileconsul push" to send these to Consul)',
        "    modified:   m",
        "    added:      new",
        "Changes to be pulled:",
        '  (use "fileconsul pull" to apply these locally)',
        "    added:      r",
        "Conflicts:",
        '  (changed on both sides: see them with "fileconsul diff"; merge by hand, or keep',
        '   one side with "fileconsul push --force" (local) or "fileconsul pull --force")',
        "    c (local modified, remote modified)",
    ]
    report = render.status_json("p", plan(local, base, remote_files), revision=1, head=2)
    assert json.loads(json.dumps(report))["conflicts"] == [
        {"path": "c", "local": "modified", "remote": "modified"}
    ]
    assert render.status_text(plan({}, {}, {})) == "Everything up-to-date."
