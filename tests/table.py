"""The three-way decision table, read from docs/design.md: the table the docs show is the one
the tests run, row by row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DESIGN = Path(__file__).resolve().parent.parent / "docs" / "design.md"

# A state of one path on one side: None (absent), or (content, executable?).
State = tuple[str, bool] | None

STATES: dict[str, State] = {
    "\u2013": None,
    "A": ("alpha\n", False),
    "A+x": ("alpha\n", True),
    "B": ("bravo\n", False),
    "C": ("charlie\n", False),
}


@dataclass(frozen=True)
class Row:
    name: str
    base: State
    local: State
    remote: State
    #: "push:<change>", "pull:<change>", "conflict:<local>/<remote>", "converged" or "none"
    expect: str


def _expect(shown: str) -> str:
    if shown == "nothing":
        return "none"
    if shown.startswith("nothing ("):
        return "converged"
    kind, _, change = shown.partition(": ")
    return f"{kind}:{change}"


def read_rows() -> list[Row]:
    text = DESIGN.read_text()
    table = text[text.index("| base | local | remote |") :].split("\n\n")[0]
    rows = []
    for line in table.splitlines()[2:]:
        base, local, remote, shown = (cell.strip() for cell in line.strip("|").split("|")[:4])
        name = "/".join("absent" if cell == "\u2013" else cell for cell in (base, local, remote))
        rows.append(Row(name, STATES[base], STATES[local], STATES[remote], _expect(shown)))
    return rows


ROWS = read_rows()
