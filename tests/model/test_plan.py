"""The pure planner from its table, and what it refuses, on plain values."""

from __future__ import annotations

import pytest

from fileconsul.model.facts import FileInfo, content_hash
from fileconsul.model.plan import Action, Plan, delete_cap, oversized, plan
from tests.table import ROWS, Row, State


def info(state: State) -> dict[str, FileInfo]:
    if state is None:
        return {}
    text, executable = state
    return {"f": FileInfo(content_hash(text.encode()), len(text), 0o755 if executable else 0o644)}


def outcome(p: Plan) -> str:
    if p.push:
        return f"push:{p.push[0].change}"
    if p.pull:
        return f"pull:{p.pull[0].change}"
    if p.conflicts:
        return f"conflict:{p.conflicts[0].local}/{p.conflicts[0].remote}"
    return "converged" if p.converged else "none"


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_decision_table_row(row: Row) -> None:
    p = plan(info(row.local), info(row.base), info(row.remote))
    assert outcome(p) == row.expect
    assert len(p.push) + len(p.pull) + len(p.conflicts) + len(p.converged) <= 1


def test_push_never_carries_remote_only_changes_and_pull_never_local_ones() -> None:
    base = {**_named("a", "1"), **_named("b", "1")}
    local = {**_named("a", "2"), **_named("b", "1")}
    remote = {**_named("a", "1"), **_named("b", "3")}
    p = plan(local, base, remote)
    assert [a.path for a in p.pushes(force=False)] == ["a"]
    assert [a.path for a in p.pulls(force=False)] == ["b"]


def test_force_takes_the_local_side_on_push_and_the_remote_side_on_pull() -> None:
    p = plan(_named("f", "mine"), _named("f", "base"), _named("f", "theirs"))
    assert p.pushes(force=False) == []
    assert p.pulls(force=False) == []
    assert p.pushes(force=True)[0].target == _named("f", "mine")["f"]
    assert p.pulls(force=True)[0].target == _named("f", "theirs")["f"]


def _tree(count: int) -> dict[str, FileInfo]:
    return {f"f{i}": _named(f"f{i}", str(i))[f"f{i}"] for i in range(count)}


def test_delete_cap_refuses_more_than_half_unless_allowed() -> None:
    deletes = [Action(f"f{i}", "deleted", None) for i in range(3)]
    cap = delete_cap(deletes, _tree(5), side="push", max_delete=None, force=False)
    assert cap is not None
    assert cap.reason == "refusing to delete 3 of 5 files in Consul"
    assert "--max-delete 3 or --force" in cap.message
    assert delete_cap(deletes, _tree(6), side="push", max_delete=None, force=False) is None
    assert delete_cap(deletes, _tree(5), side="push", max_delete=3, force=False) is None
    assert delete_cap(deletes, _tree(5), side="push", max_delete=None, force=True) is None
    assert delete_cap(deletes, _tree(100), side="pull", max_delete=2, force=False) is not None


def test_a_rename_is_not_a_delete_for_the_cap() -> None:
    before = _tree(1)
    renamed = [Action("f0", "deleted", None), Action("g0", "added", before["f0"])]
    assert delete_cap(renamed, before, side="pull", max_delete=None, force=False) is None
    replaced = [Action("f0", "deleted", None), Action("g0", "added", _named("g0", "x")["g0"])]
    cap = delete_cap(replaced, before, side="pull", max_delete=None, force=False)
    assert cap is not None
    assert cap.reason == "refusing to delete 1 of 1 files locally"


def test_only_files_over_the_limit_are_oversized() -> None:
    actions = [
        Action("small", "added", FileInfo("0" * 16, 10)),
        Action("big", "modified", FileInfo("1" * 16, 11)),
        Action("gone", "deleted", None),
    ]
    assert oversized(actions, 10) == [("big", 11)]
    assert oversized(actions, 11) == []


def _named(path: str, text: str) -> dict[str, FileInfo]:
    return {path: FileInfo(content_hash(text.encode()), len(text), 0o644)}
