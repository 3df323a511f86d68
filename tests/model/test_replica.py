"""Where a replica stands against its source, and the staged-rollout gate: pure rules, each
row of the tables a case."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fileconsul.model.records import Commit, Head, new_head
from fileconsul.model.replica import Gate, judge, refusal, standing


def commit(revision: int, node: str = "n1") -> Commit:
    return Commit(revision, f"2026-01-01T00:00:{revision:02d}Z", node, "u", "", (), 1, "d")


def head(
    revision: int,
    *,
    oldest: int = 1,
    source: str | None = None,
    node: str = "n1",
    history: str = "h1",
) -> Head:
    shown = new_head(commit(revision, node), keep=100, history=history)
    return replace(shown, oldest=oldest, source=source)


SOURCE = head(10, oldest=5)

# (case, target head, the source's record of the target's revision, files without a head,
#  --adopt, expected kind)
STANDINGS = [
    ("empty target", None, None, False, False, "whole"),
    ("files with no history", None, None, True, False, "refused"),
    ("files with no history, adopted", None, None, True, True, "whole"),
    ("a tree of its own", head(3), None, False, False, "refused"),
    ("a tree of its own, adopted", head(3), None, False, True, "whole"),
    ("a replica of another source", head(3, source="dc0"), None, False, False, "refused"),
    ("current", head(10, source="dc1"), None, False, False, "current"),
    (
        "same number, another revision",
        head(10, source="dc1", node="x"),
        None,
        False,
        False,
        "refused",
    ),
    ("ahead of the source", head(12, source="dc1"), None, False, False, "refused"),
    ("ahead of the source, adopted", head(12, source="dc1"), None, False, True, "whole"),
    ("behind, within the kept records", head(7, source="dc1"), commit(7), False, False, "behind"),
    ("another history", head(7, source="dc1", history="h2"), None, False, False, "refused"),
    ("behind, the record differs", head(7, source="dc1"), commit(7, "x"), False, False, "refused"),
    ("just before the oldest kept", head(4, source="dc1"), None, False, False, "behind"),
    ("behind the kept history", head(3, source="dc1"), None, False, False, "whole"),
]


@pytest.mark.parametrize(
    ("target", "kept", "has_files", "adopt", "kind"),
    [row[1:] for row in STANDINGS],
    ids=[row[0] for row in STANDINGS],
)
def test_where_a_target_stands(
    target: Head | None, kept: Commit | None, has_files: bool, adopt: bool, kind: str
) -> None:
    found = standing(
        SOURCE,
        target,
        source_dc="dc1",
        target_dc="dc2",
        kept=kept,
        has_files=has_files,
        adopt=adopt,
    )
    assert found.kind == kind
    assert (found.reason == "") == (kind in ("current", "behind"))
    if kind == "refused":
        assert "--adopt" in found.reason
        assert "dc2" in found.reason


def test_a_replica_refuses_pushes_naming_its_source() -> None:
    assert refusal(head(3), "p") is None
    assert refusal(None, "p") is None
    message = refusal(head(3, source="dc1"), "team/p")
    assert message is not None
    assert "replica of datacenter dc1" in message
    assert "--dc dc1" in message
    assert "nothing was changed" in message


def test_a_head_names_its_source_and_round_trips() -> None:
    marked = head(4, source="dc1")
    assert Head.decode(marked.encode(), 7) == replace(marked, index=7)
    assert b"replica_of" not in head(4).encode()


NODES_ALL_AT_9 = [(9, True), (9, True), (9, True), (9, True)]

# (case, gate, revisions, halts, nodes, passed since, now, expected revision, held mentions)
GATES = [
    ("no gate: the newest", Gate(), [8, 9], {}, [], {}, 0.0, 9, None),
    ("a halt holds the newest", Gate(), [8, 9], {9: "dc1: n1: exit 1"}, [], {}, 0.0, 8, "halted"),
    ("a halt of the only one", Gate(), [9], {9: "dc2: n4: exit 3"}, [], {}, 0.0, None, "halted"),
    ("every node current", Gate(1.0), [9], {}, NODES_ALL_AT_9, {}, 0.0, 9, None),
    (
        "one rejected",
        Gate(1.0),
        [9],
        {},
        [*NODES_ALL_AT_9[:3], (9, False)],
        {},
        0.0,
        None,
        "3 of 4",
    ),
    (
        "three of four is enough",
        Gate(0.75),
        [9],
        {},
        [*NODES_ALL_AT_9[:3], (8, True)],
        {},
        0.0,
        9,
        None,
    ),
    (
        "an older one is current",
        Gate(1.0),
        [8, 9],
        {},
        [(9, True), (8, True)],
        {},
        0.0,
        8,
        "1 of 2",
    ),
    ("no node reported", Gate(0.5), [9], {}, [], {}, 0.0, None, "no node"),
    ("soaking", Gate(None, 60), [9], {}, [], {9: 100.0}, 130.0, None, "soaking"),
    ("soaked", Gate(None, 60), [9], {}, [], {9: 100.0}, 161.0, 9, None),
    ("first seen now soaks", Gate(1.0, 5), [9], {}, NODES_ALL_AT_9, {}, 50.0, None, "soaking"),
]


@pytest.mark.parametrize(
    ("gate", "revisions", "halts", "nodes", "since", "now", "expected", "held"),
    [row[1:] for row in GATES],
    ids=[row[0] for row in GATES],
)
def test_the_staged_rollout_gate(
    gate: Gate,
    revisions: list[int],
    halts: dict[int, str],
    nodes: list[tuple[int, bool]],
    since: dict[int, float],
    now: float,
    expected: int | None,
    held: str | None,
) -> None:
    verdict = judge(
        gate, revisions, halts=halts, nodes=nodes, passed_since=since, now=now, source_dc="dc1"
    )
    assert verdict.revision == expected
    if held is None:
        assert verdict.held is None
    else:
        assert verdict.held is not None
        assert held in verdict.held


def test_a_soak_says_when_it_ends_and_remembers_when_it_began() -> None:
    verdict = judge(
        Gate(None, 60), [9], halts={}, nodes=[], passed_since={}, now=10.0, source_dc="dc1"
    )
    assert (verdict.revision, verdict.wake_in, verdict.passed_since) == (None, 60.0, {9: 10.0})
    later = judge(
        Gate(None, 60),
        [9],
        halts={},
        nodes=[],
        passed_since=verdict.passed_since,
        now=70.0,
        source_dc="dc1",
    )
    assert later.revision == 9
