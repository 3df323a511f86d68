"""Random interleavings of edits, deletes, pushes and pulls on three node directories against
a real agent: no change vanishes without a reported conflict, and a final round converges."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.conftest import KV, Node
from tests.consul_agent import Agent

NAMES = ["a.conf", "b.conf", "dir/c.sh", "dir/sub/d"]
_machines = itertools.count()


class Fleet(RuleBasedStateMachine):
    agent: Agent

    @initialize()
    def setup(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="fileconsul-prop-"))
        prefix = f"prop{next(_machines)}-{self.tmp.name[-6:]}"
        self.kv = KV(self.agent.url)
        self.nodes = []
        for i in range(3):
            root = self.tmp / f"n{i}"
            root.mkdir()
            self.nodes.append(Node(root, self.agent.addr, prefix))
        #: Per node: paths edited or deleted locally since that node last synced them.
        self.unsent: list[dict[str, bytes | None]] = [{} for _ in self.nodes]
        self.counter = itertools.count()

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def remote(self) -> dict[str, bytes]:
        return self.kv.files(self.nodes[0].prefix)

    @rule(node=st.integers(0, 2), name=st.sampled_from(NAMES))
    def edit(self, node: int, name: str) -> None:
        data = f"{node}:{next(self.counter)}\n".encode()
        self.nodes[node].write(name, data)
        self.unsent[node][name] = data

    @rule(node=st.integers(0, 2), name=st.sampled_from(NAMES))
    def delete(self, node: int, name: str) -> None:
        path = self.nodes[node].root / name
        if path.exists():
            path.unlink()
            self.unsent[node][name] = None

    @rule(node=st.integers(0, 2))
    def push(self, node: int) -> None:
        n = self.nodes[node]
        local, before = n.files(), self.remote()
        result = n.run("push", "--max-delete", "10", "--no-report")
        if result.exit_code == 4:
            assert "changed on both sides" in result.stderr
            assert self.remote() == before
            assert n.files() == local
            return
        assert result.exit_code == 0, result.output
        after = self.remote()
        for name, data in self.unsent[node].items():
            # Every local change is now in Consul.
            assert after.get(name) == data, name
        self.unsent[node] = {}

    @rule(node=st.integers(0, 2))
    def pull(self, node: int) -> None:
        n = self.nodes[node]
        local, remote = n.files(), self.remote()
        result = n.run("pull", "--max-delete", "10", "--no-report")
        if result.exit_code == 4:
            assert "changed on both sides" in result.stderr
            assert n.files() == local
            return
        assert result.exit_code == 0, result.output
        after = n.files()
        for name, data in self.unsent[node].items():
            # An unsent local change survives a pull untouched.
            assert after.get(name) == data, name
        for name in set(remote) | set(after):
            if name not in self.unsent[node]:
                assert after.get(name) == remote.get(name), name
        # Paths equal on both sides count as synced now.
        self.unsent[node] = {k: v for k, v in self.unsent[node].items() if remote.get(k) != v}

    @invariant()
    def no_temporary_files_left(self) -> None:
        if hasattr(self, "tmp"):
            assert not list(self.tmp.rglob(".fileconsul-tmp-*"))

    def converge(self) -> None:
        # The final round: each node pushes (keeping its own side of any conflict), then
        # each takes what Consul holds.
        for n in self.nodes:
            assert n.run("push", "--force", "--no-report").exit_code == 0
        for n in self.nodes:
            assert n.run("pull", "--force", "--no-report").exit_code == 0
        remote = self.remote()
        for n in self.nodes:
            assert n.files() == remote
            assert n.run("status").exit_code == 0


def test_random_interleavings_lose_nothing_and_converge(agent: Agent) -> None:
    class Run(Fleet):
        def teardown(self) -> None:
            if hasattr(self, "nodes"):
                self.converge()
            super().teardown()

    Run.agent = agent
    state = Run.TestCase
    state.settings = settings(
        max_examples=8,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    state().runTest()
