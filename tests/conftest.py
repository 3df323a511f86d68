from __future__ import annotations

import base64
import itertools
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from fileconsul.cli import cli
from fileconsul.commands.context import Context
from tests.consul_agent import STARTED, Agent, consul_binary

_counter = itertools.count()


@pytest.fixture(scope="session")
def consul_bin() -> str:
    return consul_binary()


@pytest.fixture(scope="session")
def agent(consul_bin: str) -> Iterator[Agent]:
    started = Agent(consul_bin).start()
    yield started
    started.cleanup()


def _children() -> set[int]:
    mine = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == mine and fields[0] != "Z":
            found.add(int(entry))
    return found


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a thread or a child process behind."""
    threads = set(threading.enumerate())
    children = _children() - STARTED
    yield
    leaked_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
    leaked_children = _children() - STARTED - children
    assert not leaked_threads, f"threads left running: {leaked_threads}"
    assert not leaked_children, f"child processes left running: {leaked_children}"


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    return f"t{next(_counter)}-{name}"


@dataclass
class Node:
    """One fileconsul node: a directory, an agent address and a prefix, driven by the CLI."""

    root: Path
    addr: str
    prefix: str
    token: str | None = None

    def run(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        base = ["--addr", self.addr, "--prefix", self.prefix, "--basepath", str(self.root)]
        if self.token:
            base += ["--token", self.token]
        command, rest = args[0], list(args[1:])
        return CliRunner().invoke(cli, [command, *base, *rest], input=input, env=env)

    def write(self, rel: str, data: bytes | str, mode: int | None = None) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        if mode is not None:
            path.chmod(mode)
        return path

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def files(self) -> dict[str, bytes]:
        """Every regular file under the root but fileconsul's own directory and the
        temporary files and directories of an interrupted pull (checked for separately). A
        snapshot taken while a watcher renames files in is taken again."""
        for _ in range(50):
            try:
                return self._files()
            except FileNotFoundError:
                continue
        return self._files()

    def _files(self) -> dict[str, bytes]:
        found = {}
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            parts = rel.split("/")
            own = parts[0] == ".fileconsul" or any(p.startswith(".fileconsul-tmp-") for p in parts)
            if path.is_file() and not path.is_symlink() and not own:
                found[rel] = path.read_bytes()
        return found


@pytest.fixture
def make_node(tmp_path: Path, agent: Agent, prefix: str) -> Any:
    def make(name: str, *, addr: str | None = None, token: str | None = None) -> Node:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        return Node(root, addr or agent.addr, prefix, token)

    return make


@pytest.fixture
def node(make_node: Any) -> Node:
    made: Node = make_node("a")
    return made


@dataclass
class KV:
    """Direct access to the agent's KV store, to plant keys and check what Consul holds."""

    url: str
    token: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"X-Consul-Token": self.token} if self.token else {}

    def tree(self, prefix: str) -> dict[str, dict[str, Any]]:
        response = httpx.get(
            f"{self.url}/v1/kv/{prefix}/", params={"recurse": ""}, headers=self._headers()
        )
        if response.status_code == 404:
            return {}
        response.raise_for_status()
        return {
            e["Key"]: {
                "value": base64.b64decode(e["Value"] or ""),
                "flags": e["Flags"],
                "index": e["ModifyIndex"],
            }
            for e in response.json()
        }

    def files(self, prefix: str) -> dict[str, bytes]:
        """The file keys under the prefix."""
        start = len(prefix) + 1
        return {key[start:]: entry["value"] for key, entry in self.tree(prefix).items()}

    def meta(self, prefix: str) -> dict[str, dict[str, Any]]:
        """What fileconsul keeps beside the tree: head, manifests, records, kept contents,
        lock and reports."""
        return self.tree(prefix + ".fileconsul")

    def head(self, prefix: str) -> dict[str, Any]:
        import json

        entry = self.meta(prefix)[f"{prefix}.fileconsul/head"]
        head: dict[str, Any] = json.loads(entry["value"])
        head["index"] = entry["index"]
        return head

    def rewrite_head(self, prefix: str, **fields: Any) -> None:
        """Rewrite the head with some fields changed (its hash in its Flags, as fileconsul
        writes it): what a tampering or a newer writer would leave."""
        import json

        import xxhash

        head = self.head(prefix)
        del head["index"]
        value = json.dumps({**head, **fields}).encode()
        self.txn_set({f"{prefix}.fileconsul/head": value}, xxhash.xxh3_64_intdigest(value))

    def manifest(self, prefix: str) -> dict[str, Any]:
        """The head revision's manifest, decoded."""
        import json
        import zlib

        revision = self.head(prefix)["revision"]
        entry = self.meta(prefix)[f"{prefix}.fileconsul/manifests/{revision:010d}"]
        manifest: dict[str, Any] = json.loads(zlib.decompress(entry["value"]))
        return manifest

    def txn_set(self, items: dict[str, bytes], flags: int = 0) -> None:
        ops = [
            {"KV": {"Verb": "set", "Key": k, "Value": base64.b64encode(v).decode(), "Flags": flags}}
            for k, v in items.items()
        ]
        response = httpx.put(f"{self.url}/v1/txn", json=ops, headers=self._headers())
        assert response.status_code == 200, response.text

    def end_sessions(self, name_prefix: str) -> int:
        """Destroy every session whose name starts with `name_prefix`, as Consul does when the
        TTL of a process killed with SIGKILL runs out (up to twice the TTL later): what comes
        after is the same, without the wait. How many there were."""
        sessions = httpx.get(f"{self.url}/v1/session/list", headers=self._headers()).json()
        doomed = [s["ID"] for s in sessions if str(s.get("Name", "")).startswith(name_prefix)]
        for session in doomed:
            httpx.put(f"{self.url}/v1/session/destroy/{session}", headers=self._headers())
        return len(doomed)

    def put(self, key: str, value: bytes, **params: Any) -> None:
        response = httpx.put(
            f"{self.url}/v1/kv/{key}", content=value, params=params, headers=self._headers()
        )
        assert response.status_code == 200, response.text
        assert response.json() is True, response.text


@pytest.fixture
def kv(agent: Agent) -> KV:
    return KV(agent.url)


class RecordingTransport(httpx.BaseTransport):
    """The real HTTP transport, recording each request (and the status it got) so a test can
    check what was sent; `before(request)` may act first, to inject a fault at that moment."""

    def __init__(self, before: Callable[[httpx.Request], None] | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[tuple[str, str, bytes]] = []
        self.statuses: list[int] = []
        self.before = before

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        if self.before is not None:
            self.before(request)
        self.requests.append((request.method, request.url.path, body))
        response = self.inner.handle_request(request)
        self.statuses.append(response.status_code)
        return response

    def close(self) -> None:
        self.inner.close()

    def txns(self) -> list[list[dict[str, Any]]]:
        import json

        return [json.loads(body) for method, path, body in self.requests if path == "/v1/txn"]


def is_write_txn(request: httpx.Request) -> bool:
    """A transaction that writes (sets, deletes or checks), not one that only reads."""
    body = request.read()
    return request.url.path == "/v1/txn" and b'"Verb":"get' not in body.replace(b" ", b"")


def library_run(node: Node, transport: httpx.BaseTransport | None = None, **kw: Any) -> Context:
    """A Context for `node`, on a client that may record its traffic."""
    from fileconsul import config
    from fileconsul.store.client import ConsulClient

    settings = config.settings(
        addr=node.addr, prefix=node.prefix, basepath=node.root, token=node.token, env={}
    )
    return Context(settings, ConsulClient(settings.consul, transport=transport), **kw)
