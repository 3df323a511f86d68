"""The original fileconsul article's scenario, replayed on a throwaway local cluster.

One Consul server agent (127.0.0.1) and one client agent (127.0.0.2), and two node
directories, "server" and "client", each using its own agent. Every command is printed before
its output; every exit code and result is checked; the demo exits non-zero on any deviation
and stops every process it started.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.consul_agent import Agent, consul_binary  # noqa: E402

SCRIPT = "#!/bin/sh\n# {name}: check that the service is up\nexec pgrep -x {name} >/dev/null\n"
LOADAVG = (
    "#!/bin/sh\n# loadavg: warn above 2, fail above 4\n"
    "awk '{exit ($1 > 4) ? 2 : ($1 > 2)}' /proc/loadavg\n"
)
FILES = {
    "bin/ntp": SCRIPT.format(name="ntpd"),
    "bin/apache2": SCRIPT.format(name="apache2"),
    "bin/loadavg": LOADAVG,
    "config/service/apache2.json": '{"service": {"name": "apache2", "port": 80}}\n',
    "config/service/ntp.json": '{"service": {"name": "ntp", "port": 123}}\n',
    "config/template/server/check_loadavg.json": (
        '{"check": {"name": "loadavg", "script": "/consul/share/bin/loadavg", "interval": "10s"}}\n'
    ),
    "config/template/server/service_apache2.json": '{"service": {"name": "apache2"}}\n',
    "config/template/server/agent_server.json": '{"server": true, "bootstrap_expect": 1}\n',
    "config/template/server/service_ntp.json": '{"service": {"name": "ntp"}}\n',
    "config/template/client/check_loadavg.json": (
        '{"check": {"name": "loadavg", "script": "/consul/share/bin/loadavg", "interval": "10s"}}\n'
    ),
    "config/template/client/agent_client.json": '{"server": false, "start_join": ["server"]}\n',
    "config/template/client/service_ntp.json": '{"service": {"name": "ntp"}}\n',
    "config/check/loadavg.json": '{"check": {"name": "loadavg", "ttl": "30s"}}\n',
}
EXECUTABLE = {"bin/ntp", "bin/apache2", "bin/loadavg"}


class Deviation(Exception):
    pass


def say(text: str) -> None:
    print(f"\n# {text}", flush=True)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Deviation(what)
    print(f"  ok: {what}", flush=True)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise Deviation(f"timed out waiting for {what}")
        time.sleep(0.05)
    print(f"  ok: {what}", flush=True)


class Node:
    def __init__(self, name: str, root: Path, agent: Agent) -> None:
        self.name, self.root, self.agent = name, root, agent
        root.mkdir(parents=True)

    def args(self, command: str, *extra: str) -> list[str]:
        return [
            "fileconsul",
            command,
            "--addr",
            self.agent.addr,
            "--basepath",
            str(self.root),
            *extra,
        ]

    def run(self, command: str, *extra: str, expect: int = 0) -> str:
        args = self.args(command, *extra)
        print(f"\n{self.name}$ {shlex.join(args)}", flush=True)
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        sys.stdout.write(proc.stdout)
        sys.stdout.write(proc.stderr)
        check(proc.returncode == expect, f"exit code {proc.returncode} (expected {expect})")
        return proc.stdout

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()


def main() -> int:
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    binary = consul_binary()
    started: list[Agent] = []
    watchers: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="fileconsul-demo-") as tmp:
            say("a Consul server agent and a client agent on loopback")
            server_agent = Agent(binary, node_name="server").start()
            started.append(server_agent)
            client_agent = Agent(
                binary,
                host="127.0.0.2",
                node_name="client",
                dev=False,
                extra=["-retry-join", f"127.0.0.1:{server_agent.ports['serf_lan']}"],
            ).start()
            started.append(client_agent)
            print(f"  server agent {server_agent.addr}, client agent {client_agent.addr}")
            server = Node("server", Path(tmp, "server"), server_agent)
            client = Node("client", Path(tmp, "client"), client_agent)
            for rel, text in FILES.items():
                path = server.root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                path.chmod(0o755 if rel in EXECUTABLE else 0o644)

            say("on the server: status shows everything to push, then push")
            out = server.run("status", expect=1)
            check(all(rel in out for rel in FILES), "every file is listed to be pushed")
            server.run("push")
            say("on the client: pull the shared tree")
            client.run("pull")
            check(
                all(client.read(rel) == text for rel, text in FILES.items()),
                "the client has every file, byte for byte",
            )
            check(
                all(os.access(client.root / rel, os.X_OK) for rel in EXECUTABLE),
                "the scripts are still executable",
            )

            say("on the client: edit bin/apache2; status on both sides")
            (client.root / "bin/apache2").write_text(FILES["bin/apache2"] + "# edited on client\n")
            out = client.run("status", expect=1)
            check(
                "Changes to be pushed:" in out and "bin/apache2" in out,
                "client: one change to push",
            )
            check(
                "Changes to be pulled:" not in out,
                "client: nothing to pull (no false 'modify local')",
            )
            server.run("status")
            say("push from the client; status and pull on the server")
            client.run("push")
            out = server.run("status", expect=1)
            check(
                "Changes to be pulled:" in out and "Changes to be pushed:" not in out,
                "server: one change to pull, nothing to push",
            )
            server.run("pull")
            check("edited on client" in server.read("bin/apache2"), "the server has the edit")

            say("start `fileconsul watch` on the server, push once more from the client")
            watcher = subprocess.Popen(server.args("watch", "--node", "server"))
            watchers.append(watcher)
            time.sleep(1.0)
            (client.root / "config/service/ntp.json").write_text(
                '{"service": {"name": "ntp", "port": 1123}}\n'
            )
            client.run("push")
            wait_for(
                lambda: "1123" in server.read("config/service/ntp.json"),
                "the change arrives on the server under watch",
            )
            watcher.terminate()
            check(watcher.wait(timeout=20) == 0, "watch stops cleanly on SIGTERM (exit 0)")
            watchers.remove(watcher)

            say("the same through `consul watch` running fileconsul pull as its handler")
            handler = shlex.join(server.args("pull", "--node", "server"))
            cmd = [
                binary,
                "watch",
                f"-http-addr={server_agent.addr}",
                "-type",
                "keyprefix",
                "-prefix",
                "fileconsul/",
                handler,
            ]
            print(f"\nserver$ {shlex.join(cmd)} &", flush=True)
            watcher = subprocess.Popen(cmd, env={**os.environ, "SHELL": "/bin/sh"})
            watchers.append(watcher)
            time.sleep(1.0)
            (client.root / "bin/loadavg").write_text(LOADAVG.replace("above 4", "above 8"))
            client.run("push")
            wait_for(
                lambda: "above 8" in server.read("bin/loadavg"),
                "the change arrives on the server through consul watch",
            )
            server.run("status", "--fleet")
    except Deviation as exc:
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in watchers:
            proc.terminate()
            proc.wait(timeout=20)
        for agent in reversed(started):
            agent.cleanup()
    print("\nThe demo ran as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
