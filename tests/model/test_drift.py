"""Drift from (base, local) facts alone, and a put-back planned as a pull of the committed
version over exactly the drifted paths."""

from __future__ import annotations

from fileconsul.model.drift import Drift, drifted, restoring
from fileconsul.model.facts import FileInfo, content_hash
from fileconsul.model.plan import Sides


def facts(text: str, mode: int = 0o644) -> FileInfo:
    return FileInfo(content_hash(text.encode()), len(text), mode)


def test_drift_is_a_managed_file_modified_deleted_or_re_moded_here() -> None:
    base = {"same": facts("1"), "edited": facts("2"), "gone": facts("3"), "chmod": facts("4")}
    local = {
        "same": facts("1"),
        "edited": facts("2 by hand"),
        "chmod": facts("4", 0o755),
        "new": facts("not managed"),
    }
    assert drifted(base, local) == [
        Drift("chmod", "mode"),
        Drift("edited", "modified"),
        Drift("gone", "deleted"),
    ]


def test_no_base_means_nothing_is_managed_and_nothing_drifted() -> None:
    assert drifted({}, {"a": facts("1")}) == []
    assert drifted({"a": facts("1")}, {"a": facts("1")}) == []


def test_restoring_plans_the_committed_version_over_the_drifted_paths_only() -> None:
    committed = {"edited": facts("2"), "gone": facts("3"), "chmod": facts("4"), "mine": facts("5")}
    base = dict(committed)
    local = {
        "edited": facts("2 by hand"),
        "chmod": facts("4", 0o755),
        "mine": facts("5 by hand"),
        "new": facts("new"),
    }
    seen = Sides(local, base, committed, [], False)
    plan = restoring(seen, ["edited", "gone", "chmod"]).planned()
    assert [(a.path, a.change, a.target) for a in plan.pull] == [
        ("chmod", "mode", committed["chmod"]),
        ("edited", "modified", committed["edited"]),
        ("gone", "added", committed["gone"]),
    ]
    # What was not asked for is planned as before: a local edit to push, a new local file.
    assert [(a.path, a.change) for a in plan.push] == [("mine", "modified"), ("new", "added")]
    assert not plan.conflicts


def test_restoring_writes_the_head_when_the_committed_version_moved_too() -> None:
    seen = Sides({"f": facts("by hand")}, {"f": facts("given")}, {"f": facts("newer")}, [], False)
    assert seen.planned().conflicts
    plan = restoring(seen, ["f"]).planned()
    assert [(a.path, a.target) for a in plan.pull] == [("f", facts("newer"))]
