"""Staged rollout across datacenters: whether a revision of the source may go on to the
targets. A halt of it in any of the datacenters stops it; with a gate, it also waits until
enough of the source's nodes report holding it, and for the soak time after that (the pure
rules are `model.replica.judge`; this reads what they need)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from fileconsul.fleet import reports
from fileconsul.fleet.rollout import Halt, read_halt
from fileconsul.model.replica import Gate, Verdict, judge
from fileconsul.store.client import ConsulClient
from fileconsul.store.layout import halt_key

#: A datacenter's name and its client.
Place = tuple[str, ConsulClient]


@dataclass
class Stages:
    """The gate, and since when each source revision has passed it (kept while this
    replicator runs: one that starts over soaks again)."""

    gate: Gate
    source: Place
    passed_since: dict[int, float] = field(default_factory=dict)

    def judge(
        self, prefix: str, places: Sequence[Place], revisions: Sequence[int]
    ) -> tuple[Verdict, dict[int, tuple[str, Halt]]]:
        """The newest of `revisions` that may go on now, and every halt of them found in the
        source and in `places` (revision -> (datacenter, halt))."""
        halts: dict[int, tuple[str, Halt]] = {}
        for dc, client in (self.source, *places):
            entry, _ = client.get(halt_key(prefix))
            found = read_halt(entry)
            if found is not None and found.revision in revisions:
                halts.setdefault(found.revision, (dc, found))
        nodes: list[tuple[int, bool]] = []
        if self.gate.reads_fleet:
            fleet = reports.read(self.source[1], prefix)
            nodes = [(n.report.revision, n.report.result == "ok") for n in fleet.nodes]
        verdict = judge(
            self.gate,
            revisions,
            halts={r: f"in {dc} by {h.node}: {h.reason}" for r, (dc, h) in halts.items()},
            nodes=nodes,
            passed_since=self.passed_since,
            now=time.time(),
            source_dc=self.source[0],
        )
        for revision in revisions:
            self.passed_since.pop(revision, None)
        self.passed_since.update(verdict.passed_since)
        return verdict, halts
