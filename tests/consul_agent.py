"""Real Consul agents for the tests: started on loopback addresses, stopped by their PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

#: Every agent process the harness started, so the leak check can tell them from leaks.
STARTED: set[int] = set()


def consul_binary() -> str:
    """$FILECONSUL_CONSUL_BIN, else `consul` on PATH, else the project's Debian download."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "get-consul")], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"cannot get a consul binary: {out.stderr.strip()}")
    return out.stdout.strip().splitlines()[-1]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on `host` (serf uses both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port


@dataclass
class Agent:
    binary: str
    host: str = "127.0.0.1"
    hcl: str = ""
    dev: bool = True
    extra: list[str] = field(default_factory=list)
    node_name: str = ""
    #: Also serve HTTPS, on a port of its own (`ports["https"]`).
    https: bool = False
    process: subprocess.Popen[bytes] | None = None
    http_port: int = 0
    ports: dict[str, int] = field(default_factory=dict)
    log_path: Path | None = None
    data_dir: str | None = None

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def _args(self) -> list[str]:
        if not self.ports:
            names = ["http", "serf_lan", "serf_wan", "server"] + ["https"] * self.https
            while len(set(self.ports.values())) != len(names):
                self.ports = {name: free_port(self.host) for name in names}
            self.http_port = self.ports["http"]
        ports = self.ports
        args = [
            self.binary,
            "agent",
            f"-bind={self.host}",
            f"-client={self.host}",
            f"-http-port={ports['http']}",
            "-dns-port=-1",
            "-grpc-port=-1",
            f"-serf-lan-port={ports['serf_lan']}",
            f"-serf-wan-port={ports['serf_wan']}",
            f"-server-port={ports['server']}",
            f"-node={self.node_name or 'node-' + str(ports['http'])}",
            "-disable-host-node-id",
        ]
        if self.https:
            args.append(f"-https-port={ports['https']}")
        if self.dev:
            args.append("-dev")
        else:
            if self.data_dir is None:
                self.data_dir = tempfile.mkdtemp(prefix="fileconsul-agent-")
            args.append(f"-data-dir={self.data_dir}")
        if self.hcl:
            args.append(f"-hcl={self.hcl}")
        return args + self.extra

    def start(self, *, wait_leader: bool = True, token: str | None = None) -> Agent:
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - the agent keeps writing to it
            prefix="consul-agent-", suffix=".log", delete=False
        )
        self.log_path = Path(handle.name)
        self.process = subprocess.Popen(
            self._args(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()
        STARTED.add(self.process.pid)
        if wait_leader:
            self.wait_ready(token=token)
        return self

    def wait_ready(self, *, token: str | None = None, timeout: float = 30.0) -> None:
        """Until the agent answers and a KV write goes through (a leader exists)."""
        deadline = time.monotonic() + timeout
        headers = {"X-Consul-Token": token} if token else {}
        last = ""
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"consul agent exited: {self.log_tail()}")
            try:
                response = httpx.put(
                    f"{self.url}/v1/kv/fileconsul-test-ready", content=b"1", headers=headers
                )
                if response.status_code == 200:
                    httpx.delete(f"{self.url}/v1/kv/fileconsul-test-ready", headers=headers)
                    return
                last = response.text
            except httpx.TransportError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"consul agent not ready: {last}; {self.log_tail()}")

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-2000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process this harness started, by its PID."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        STARTED.discard(self.process.pid)
        self.process = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def cleanup(self) -> None:
        self.stop()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class Cluster:
    """Three servers and two clients, each agent on its own loopback address (127.0.0.x)."""

    binary: str
    servers: list[Agent] = field(default_factory=list)
    clients: list[Agent] = field(default_factory=list)
    hcl: str = ""

    def start(self, base: int = 10) -> Cluster:
        # Fast elections, and a restarted server becomes a voter again within a second.
        fast = 'performance { raft_multiplier = 1 } autopilot { server_stabilization_time = "1s" }'
        hcl = f"{fast} {self.hcl}".strip()
        hosts = [f"127.0.0.{base + i}" for i in range(5)]
        for i, host in enumerate(hosts[:3]):
            self.servers.append(
                Agent(self.binary, host=host, node_name=f"server{i + 1}", dev=False, hcl=hcl)
            )
        for i, host in enumerate(hosts[3:]):
            self.clients.append(
                Agent(self.binary, host=host, node_name=f"client{i + 1}", dev=False, hcl=hcl)
            )
        for agent in self.agents:
            agent._args()  # choose the ports, so that every agent can name the servers
        join = [f"-retry-join={s.host}:{s.ports['serf_lan']}" for s in self.servers]
        for server in self.servers:
            server.extra = ["-server", "-bootstrap-expect=3", "-retry-interval=1s", *join]
        for client in self.clients:
            client.extra = ["-retry-interval=1s", *join]
        for agent in self.agents:
            agent.start(wait_leader=False)
        for agent in self.agents:
            agent.wait_ready(timeout=60)
        self.wait_healthy()
        return self

    @property
    def agents(self) -> list[Agent]:
        return self.servers + self.clients

    def leader(self, timeout: float = 30.0) -> Agent:
        """The server that is leader now, as every live agent sees it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for agent in self.agents:
                if agent.process is None:
                    continue
                try:
                    address = httpx.get(f"{agent.url}/v1/status/leader", timeout=2).json()
                except (httpx.HTTPError, ValueError):
                    continue
                for server in self.servers:
                    alive = server.process is not None
                    if alive and address == f"{server.host}:{server.ports['server']}":
                        return server
            time.sleep(0.1)
        raise RuntimeError("no leader")

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until all three servers are healthy Raft voters: a leader can be lost again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                health = httpx.get(
                    f"{self.servers[0].url}/v1/operator/autopilot/health", timeout=2
                ).json()
                servers = health.get("Servers") or []
                if (
                    health.get("Healthy")
                    and len(servers) == len(self.servers)
                    and all(s.get("Voter") for s in servers)
                ):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("the cluster did not become healthy")

    def cleanup(self) -> None:
        for agent in self.agents:
            agent.cleanup()
