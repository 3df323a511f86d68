"""Each row of the decision table in docs/design.md, end to end against a real agent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import KV, Node
from tests.table import ROWS, Row, State


def set_state(node: Node, state: State) -> None:
    path = node.root / "f"
    if state is None:
        path.unlink(missing_ok=True)
    else:
        node.write("f", state[0], 0o755 if state[1] else 0o644)


def on_disk(node: Node) -> State:
    path = node.root / "f"
    if not path.exists():
        return None
    return path.read_text(), bool(path.stat().st_mode & 0o100)


def in_consul(kv: KV, prefix: str) -> bytes | None:
    return kv.files(prefix).get("f")


def arrange(row: Row, make_node: Any) -> tuple[Node, Node]:
    subject, other = make_node("subject"), make_node("other")
    # A second file, the same everywhere: deleting "f" is then within the delete cap.
    other.write("keep", "the same everywhere\n")
    assert other.run("push").exit_code == 0
    assert subject.run("pull").exit_code == 0
    if row.base is not None:
        set_state(other, row.base)
        assert other.run("push").exit_code == 0
        assert subject.run("pull").exit_code == 0
    if row.remote != row.base:
        set_state(other, row.remote)
        result = other.run("push")
        assert result.exit_code == 0, result.output
    if row.local != row.base:
        set_state(subject, row.local)
    return subject, other


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_status_push_and_pull_follow_the_table(row: Row, make_node: Any, kv: KV) -> None:
    subject, _ = arrange(row, make_node)
    result = subject.run("status", "--json")
    report = json.loads(result.stdout)
    kind, _, change = row.expect.partition(":")
    if kind == "push":
        assert report["push"] == [{"path": "f", "change": change}]
        assert result.exit_code == 1
        assert subject.run("push").exit_code == 0
        expected = row.local[0].encode() if row.local else None
        assert in_consul(kv, subject.prefix) == expected
    elif kind == "pull":
        assert report["pull"] == [{"path": "f", "change": change}]
        assert result.exit_code == 1
        assert subject.run("pull").exit_code == 0
        assert on_disk(subject) == row.remote
    elif kind == "conflict":
        local, remote = change.split("/")
        assert report["conflicts"] == [{"path": "f", "local": local, "remote": remote}]
        assert result.exit_code == 4
        before = in_consul(kv, subject.prefix)
        assert subject.run("push").exit_code == 4
        assert subject.run("pull").exit_code == 4
        assert on_disk(subject) == row.local
        assert in_consul(kv, subject.prefix) == before
    else:
        assert report["in_sync"] is True
        # A change made on both sides is in sync before this node records the new revision.
        assert report.pop("revision") <= report["head"]
        assert report == {
            "prefix": subject.prefix,
            "in_sync": True,
            "head": report["head"],
            "push": [],
            "pull": [],
            "conflicts": [],
            "refused": [],
        }
        assert result.exit_code == 0
    # Whatever the row, a push and a pull never leave a change silently dropped.
    after = json.loads(subject.run("status", "--json").stdout)
    if kind in ("push", "pull", "converged", "none"):
        assert after["in_sync"] is True
