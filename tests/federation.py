"""Three datacenters joined over the WAN, one agent each (a server), on loopback addresses of
their own: 127.0.0.20 and up (the cluster tests use 127.0.0.10-14). Stopped by their PIDs.

The first datacenter's agent keeps its data on disk, so that it can be killed and started
again with its tree; the others are dev agents (their data in memory).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from tests.consul_agent import Agent

DATACENTERS = ("dc1", "dc2", "dc3")


@dataclass
class Federation:
    binary: str
    base: int = 20
    agents: dict[str, Agent] = field(default_factory=dict)

    def start(self) -> Federation:
        fast = "performance { raft_multiplier = 1 }"
        for i, dc in enumerate(DATACENTERS):
            host = f"127.0.0.{self.base + i}"
            agent = Agent(self.binary, host=host, node_name=f"{dc}-server")
            agent.extra = [f"-datacenter={dc}"]
            if i == 0:
                agent.dev, agent.hcl = False, fast
                agent.extra += ["-server", "-bootstrap-expect=1"]
            agent._args()  # choose the ports, so that every agent can name the others
            self.agents[dc] = agent
        for agent in self.agents.values():
            others = [a for a in self.agents.values() if a is not agent]
            agent.extra += ["-retry-interval-wan=1s"]
            agent.extra += [f"-retry-join-wan={a.host}:{a.ports['serf_wan']}" for a in others]
        for agent in self.agents.values():
            agent.start(wait_leader=False)
        for agent in self.agents.values():
            agent.wait_ready(timeout=60)
        self.wait_federated()
        return self

    def addr(self, dc: str) -> str:
        return self.agents[dc].addr

    def url(self, dc: str) -> str:
        return self.agents[dc].url

    def wait_federated(self, timeout: float = 60.0) -> None:
        """Until every agent reaches every datacenter's KV store."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._reaches(a, dc) for a in self.agents.values() for dc in DATACENTERS):
                return
            time.sleep(0.05)
        raise RuntimeError("the datacenters did not federate")

    @staticmethod
    def _reaches(agent: Agent, dc: str) -> bool:
        try:
            response = httpx.get(f"{agent.url}/v1/kv/fileconsul-test-wan", params={"dc": dc})
        except httpx.HTTPError:
            return False
        return response.status_code in (200, 404)

    def kill_and_restart(self, dc: str) -> None:
        """SIGKILL the agent, then start it again (with its data, for the first one)."""
        agent = self.agents[dc]
        agent.kill()
        agent.start(wait_leader=False)
        agent.wait_ready(timeout=60)
        self.wait_federated()

    @contextmanager
    def stopped(self, dc: str) -> Iterator[None]:
        """The agent frozen with SIGSTOP for the block, then let go with SIGCONT."""
        process = self.agents[dc].process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(process.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        for agent in self.agents.values():
            agent.kill()  # nothing to leave gracefully: the federation goes as a whole
            agent.cleanup()
