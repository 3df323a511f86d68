"""The three-way decision table, the same rows as the README's; each row is tested."""

from __future__ import annotations

from dataclasses import dataclass

# A state of one path on one side: None (absent), or (content, executable?).
State = tuple[str, bool] | None

A: State = ("alpha\n", False)
AX: State = ("alpha\n", True)
B: State = ("bravo\n", False)
C: State = ("charlie\n", False)


@dataclass(frozen=True)
class Row:
    name: str
    base: State
    local: State
    remote: State
    #: "push:<change>", "pull:<change>", "conflict:<local>/<remote>", "converged" or "none"
    expect: str


ROWS = [
    Row("unchanged", A, A, A, "none"),
    Row("added locally", None, A, None, "push:added"),
    Row("modified locally", A, B, A, "push:modified"),
    Row("deleted locally", A, None, A, "push:deleted"),
    Row("mode changed locally", A, AX, A, "push:mode"),
    Row("added remotely", None, None, A, "pull:added"),
    Row("modified remotely", A, A, B, "pull:modified"),
    Row("deleted remotely", A, A, None, "pull:deleted"),
    Row("mode changed remotely", A, A, AX, "pull:mode"),
    Row("same change on both sides", A, B, B, "converged"),
    Row("deleted on both sides", A, None, None, "converged"),
    Row("first sync, equal files", None, A, A, "converged"),
    Row("first sync, different files", None, A, B, "conflict:added/added"),
    Row("modified on both sides", A, B, C, "conflict:modified/modified"),
    Row("modified locally, deleted remotely", A, B, None, "conflict:modified/deleted"),
    Row("deleted locally, modified remotely", A, None, B, "conflict:deleted/modified"),
    Row("mode changed locally, modified remotely", A, AX, B, "conflict:mode/modified"),
]
