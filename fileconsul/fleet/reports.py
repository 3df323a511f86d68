"""The fleet report: what each node last applied, kept outside `<prefix>/` so that writing it
wakes no watcher and never looks like a file change."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from fileconsul.config import ConsulSettings
from fileconsul.errors import FileconsulError
from fileconsul.fleet.rollout import Halt, halted
from fileconsul.model.tree import KVEntry
from fileconsul.store.client import ConsulClient
from fileconsul.store.layout import nodes_prefix
from fileconsul.store.read import read_head

Result = Literal["ok", "conflict", "error", "rejected", "halted", "skipped", "untrusted"]
NodeState = Literal["current", "lagging", "failed", "rejected", "halted", "drifted", "untrusted"]
#: Drifted paths a report names, at most (it counts them all).
DRIFT_LISTED = 50


@dataclass(frozen=True)
class Report:
    node: str
    revision: int
    time: float
    result: Result
    message: str = ""
    applied: int = 0
    hook: str | None = None
    hook_exit: int | None = None
    #: When --check rejected the revision: its exit status and the last lines it printed.
    check_exit: int | None = None
    output: str = ""
    #: Managed files changed here by hand (drift): the first paths, and how many in all.
    drifted: tuple[str, ...] = ()
    drift_count: int = 0
    #: With trusted keys: the key that signed the revision it holds, and when it signed.
    signer: str = ""
    signed_at: str = ""

    def same_state(self, other: Report) -> bool:
        """Equal but for the time: rewriting it would only add Raft writes."""
        return (self.revision, self.result, self.message, self.hook_exit, self.drifted) == (
            other.revision,
            other.result,
            other.message,
            other.hook_exit,
            other.drifted,
        )


def now() -> float:
    return round(time.time(), 3)


def report(client: ConsulClient, prefix: str, new: Report, *, moved: bool = True) -> str | None:
    """Write `new`: one write when the node `moved` (applied something or reached another
    revision); otherwise only when its report says something else, so that a wake-up that
    changed nothing adds no Raft write. A note when it could not be written (the apply
    itself stands)."""
    try:
        if not moved:
            previous = read_one(client, prefix, new.node)
            if previous is not None and previous.same_state(new):
                return None
        body = json.dumps(asdict(new), separators=(",", ":")).encode()
        client.put(nodes_prefix(prefix) + new.node, body)
    except FileconsulError as exc:
        return f"fleet report not written ({exc})"
    return None


@dataclass(frozen=True)
class FleetNode:
    report: Report
    state: NodeState


@dataclass
class Fleet:
    revision: int
    nodes: list[FleetNode]
    #: The head revision's halt, when its rollout was stopped.
    halt: Halt | None = None
    #: The datacenter this tree is a replica of, when it is one.
    source: str | None = None

    @property
    def all_current(self) -> bool:
        return bool(self.nodes) and all(n.state == "current" for n in self.nodes)

    @property
    def applied_before_halt(self) -> int:
        """How many nodes applied the halted revision before it stopped."""
        if self.halt is None:
            return 0
        stopped = self.halt.revision
        return sum(1 for n in self.nodes if n.report.revision >= stopped and n.state == "current")


def read(client: ConsulClient, prefix: str) -> Fleet:
    """The head revision, its halt if any, and each reporting node's state."""
    head = read_head(client, prefix)
    revision = head.revision if head else 0
    entries, _ = client.recurse(nodes_prefix(prefix))
    fleet = fleet_of(prefix, revision, entries, halted(client, prefix, revision))
    return replace(fleet, source=head.source if head else None)


def fleet_of(
    prefix: str, revision: int, entries: list[KVEntry], halt: Halt | None, source: str | None = None
) -> Fleet:
    """The fleet from the head's revision, the entries under `nodes/` and the halt (and the
    datacenter it is a replica of)."""
    nodes = []
    for entry in entries:
        parsed = _parse(entry.key[len(nodes_prefix(prefix)) :], entry.value)
        nodes.append(FleetNode(parsed, _state(parsed, revision)))
    live = halt if halt is not None and halt.revision == revision else None
    return Fleet(revision, sorted(nodes, key=lambda n: n.report.node), live, source)


def read_datacenters(
    settings: ConsulSettings, prefix: str, dcs: Sequence[str]
) -> list[tuple[str, Fleet]]:
    """The fleet of each of `dcs` (`all`: every datacenter Consul knows), in that order."""
    if list(dcs) == ["all"]:
        with ConsulClient(settings) as client:
            dcs = sorted(client.datacenters())
    found = []
    for dc in dcs:
        with ConsulClient(replace(settings, dc=dc)) as client:
            found.append((dc, read(client, prefix)))
    return found


def _state(report: Report, revision: int) -> NodeState:
    # The first that holds, most urgent first: a node that refused what it could not verify
    # is under attack, or its keys are out of date.
    if report.result in ("untrusted", "rejected", "halted"):
        return report.result
    if report.result != "ok":
        return "failed"
    if report.drift_count:
        return "drifted"
    return "current" if report.revision >= revision else "lagging"


def forget(client: ConsulClient, prefix: str, nodes: list[str]) -> list[str]:
    """Delete the reports of `nodes` (decommissioned: no longer counted by `status --fleet`);
    the names among them that had no report, in which case nothing is deleted."""
    known, _ = client.keys(nodes_prefix(prefix))
    missing = [n for n in nodes if nodes_prefix(prefix) + n not in known]
    if not missing:
        for node in nodes:
            client.delete(nodes_prefix(prefix) + node)
    return missing


def read_one(client: ConsulClient, prefix: str, node: str) -> Report | None:
    entry, _ = client.get(nodes_prefix(prefix) + node)
    return None if entry is None else _parse(node, entry.value)


def _parse(node: str, value: bytes) -> Report:
    try:
        data: dict[str, Any] = json.loads(value)
        fields = {k: data[k] for k in Report.__dataclass_fields__ if k in data}
        fields["drifted"] = tuple(map(str, fields.get("drifted") or ()))
        return Report(**fields)
    except (ValueError, TypeError):
        return Report(node, 0, 0.0, "error", "unreadable report")
