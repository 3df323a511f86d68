"""Exit codes and messages, each as the operator sees them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fileconsul.store.layout import lock_key
from tests.conftest import KV, Node
from tests.consul_agent import Agent, free_port

MASTER = "fileconsul-test-master"


def fileconsul(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fileconsul", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


def test_exit_0_when_in_sync_and_1_when_there_is_something_to_push(node: Node) -> None:
    assert node.run("status").exit_code == 0
    node.write("f", "x")
    result = node.run("status")
    assert result.exit_code == 1
    assert "Changes to be pushed:" in result.stdout
    assert node.run("push").exit_code == 0
    assert node.run("status").exit_code == 0


def test_exit_2_on_a_usage_error(node: Node) -> None:
    result = node.run("push", "--no-such-flag")
    assert result.exit_code == 2
    assert "No such option" in result.stderr
    result = node.run("status", "--prefix", "../up")
    assert result.exit_code == 2
    assert "invalid prefix" in result.stderr


def test_exit_3_when_consul_is_unreachable_and_nothing_changes(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    port = free_port()
    for command in ("status", "push", "pull"):
        result = fileconsul(command, "--addr", f"127.0.0.1:{port}", "--basepath", str(tmp_path))
        assert result.returncode == 3, result.stderr
        assert "cannot reach Consul at http://127.0.0.1:" in result.stderr
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".fileconsul", "f"]


def test_exit_3_when_consul_has_no_leader(consul_bin: str, tmp_path: Path) -> None:
    # A server waiting for two more servers that never come: it answers, without a leader.
    hcl = 'performance { rpc_hold_timeout = "1s" }'
    lonely = Agent(consul_bin, dev=False, hcl=hcl, extra=["-server", "-bootstrap-expect=3"])
    lonely.start(wait_leader=False)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{lonely.url}/v1/status/leader", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        result = fileconsul("status", "--addr", lonely.addr, "--basepath", str(tmp_path))
        assert result.returncode == 3, result.stderr
        assert "No cluster leader" in result.stderr
        assert "retry later" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        lonely.cleanup()


def test_exit_3_when_consul_times_out(tmp_path: Path) -> None:
    # A listener that accepts connections and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        addr = f"127.0.0.1:{silent.getsockname()[1]}"
        env = {**os.environ, "FILECONSUL_HTTP_TIMEOUT": "0.5"}
        result = fileconsul("status", "--addr", addr, "--basepath", str(tmp_path), env=env)
    assert result.returncode == 3, result.stderr
    assert f"Consul at http://{addr} timed out" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_exit_4_on_a_conflict_with_a_hint(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "a")
    assert a.run("push").exit_code == 0
    b.write("f", "b")
    result = b.run("push")
    assert result.exit_code == 4
    assert "--force" in result.stderr


def test_exit_130_when_interrupted(node: Node, kv: KV, agent: Agent) -> None:
    session = httpx.put(f"{agent.url}/v1/session/create", json={"TTL": "30s"}).json()["ID"]
    try:
        kv.put(lock_key(node.prefix), b"x", acquire=session)
        node.write("f", "x")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fileconsul",
                "push",
                "--addr",
                node.addr,
                "--prefix",
                node.prefix,
                "--basepath",
                str(node.root),
                "--lock-wait",
                "20",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        # At once, though the read it interrupts waits up to --lock-wait for the held lock.
        _, stderr = proc.communicate(timeout=3)
        assert proc.returncode == 130
        assert "interrupted" in stderr
        assert "Traceback" not in stderr
    finally:
        httpx.put(f"{agent.url}/v1/session/destroy/{session}")
    assert kv.files(node.prefix) == {}


def test_version_and_module_entry_point() -> None:
    result = fileconsul("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("fileconsul, version ")


def test_original_single_dash_flags_still_work(node: Node, kv: KV) -> None:
    node.write("f", "x")
    result = fileconsul(
        "push", f"-addr={node.addr}", f"-prefix={node.prefix}", f"-basepath={node.root}"
    )
    assert result.returncode == 0, result.stderr
    assert kv.files(node.prefix) == {"f": b"x"}


def test_consul_http_addr_is_the_default_address(node: Node, kv: KV) -> None:
    node.write("f", "x")
    env = {**os.environ, "CONSUL_HTTP_ADDR": f"http://{node.addr}"}
    result = fileconsul("push", "--prefix", node.prefix, "--basepath", str(node.root), env=env)
    assert result.returncode == 0, result.stderr
    assert kv.files(node.prefix) == {"f": b"x"}


# -- ACLs: exit 6 --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_agent(consul_bin: str) -> Iterator[Agent]:
    hcl = f'acl {{ enabled = true, default_policy = "deny", tokens {{ master = "{MASTER}" }} }}'
    started = Agent(consul_bin, hcl=hcl).start(token=MASTER)
    yield started
    started.cleanup()


def pusher_rules(prefix: str) -> str:
    """The README's minimal policy for a pusher."""
    return f'key_prefix "{prefix}" {{ policy = "write" }}\nsession_prefix "" {{ policy = "write" }}'


def make_token(agent: Agent, rules: str) -> str:
    headers = {"X-Consul-Token": MASTER}
    name = f"p{time.monotonic_ns()}"
    policy = httpx.put(
        f"{agent.url}/v1/acl/policy", json={"Name": name, "Rules": rules}, headers=headers
    )
    assert policy.status_code == 200, policy.text
    token = httpx.put(
        f"{agent.url}/v1/acl/token", json={"Policies": [{"Name": name}]}, headers=headers
    )
    assert token.status_code == 200, token.text
    secret: str = token.json()["SecretID"]
    return secret


def test_acl_read_only_token_can_pull_but_push_exits_6(
    acl_agent: Agent, make_node: Any, prefix: str
) -> None:
    writer = make_token(acl_agent, pusher_rules(prefix))
    reader = make_token(acl_agent, f'key_prefix "{prefix}" {{ policy = "read" }}')
    a = make_node("a", addr=acl_agent.addr, token=writer)
    b = make_node("b", addr=acl_agent.addr, token=reader)
    a.write("f", "from writer")
    result = a.run("push")
    assert result.exit_code == 0, result.output
    assert b.run("status").exit_code == 1
    assert b.run("pull").exit_code == 0
    assert b.read("f") == b"from writer"
    b.write("f", "from reader")
    result = b.run("push")
    assert result.exit_code == 6
    assert "ACL" in result.stderr
    assert reader not in result.output
    kv = KV(acl_agent.url, MASTER)
    assert kv.files(prefix) == {"f": b"from writer"}


def test_acl_token_without_read_exits_6(acl_agent: Agent, make_node: Any, prefix: str) -> None:
    other = make_token(acl_agent, 'key_prefix "somewhere-else" { policy = "read" }')
    node = make_node("n", addr=acl_agent.addr, token=other)
    for command in ("status", "pull", "push"):
        result = node.run(command)
        assert result.exit_code == 6, (command, result.output)
        assert other not in result.output
    anonymous = make_node("anon", addr=acl_agent.addr)
    assert anonymous.run("status").exit_code == 6


def test_acl_token_from_consul_http_token_file(
    acl_agent: Agent, make_node: Any, prefix: str, tmp_path: Path
) -> None:
    writer = make_token(acl_agent, pusher_rules(prefix))
    token_file = tmp_path / "token"
    token_file.write_text(writer + "\n")
    node = make_node("n", addr=acl_agent.addr)
    node.write("f", "x")
    result = fileconsul(
        "push",
        "--addr",
        node.addr,
        "--prefix",
        prefix,
        "--basepath",
        str(node.root),
        "-v",
        env={**os.environ, "CONSUL_HTTP_TOKEN_FILE": str(token_file)},
    )
    assert result.returncode == 0, result.stderr
    assert writer not in result.stdout + result.stderr
    assert KV(acl_agent.url, MASTER).files(prefix) == {"f": b"x"}


def test_acl_minimal_puller_policy_pulls_and_reports(
    acl_agent: Agent, make_node: Any, prefix: str
) -> None:
    writer = make_token(acl_agent, pusher_rules(prefix))
    puller = make_token(
        acl_agent,
        f'key_prefix "{prefix}" {{ policy = "read" }}\n'
        f'key_prefix "{prefix}.fileconsul/nodes/" {{ policy = "write" }}',
    )
    reader = make_token(acl_agent, f'key_prefix "{prefix}" {{ policy = "read" }}')
    a = make_node("a", addr=acl_agent.addr, token=writer)
    a.write("f", "x")
    assert a.run("push").exit_code == 0
    b = make_node("b", addr=acl_agent.addr, token=puller)
    result = b.run("pull", "--node", "puller")
    assert result.exit_code == 0, result.output
    assert "fleet report not written" not in result.stderr
    c = make_node("c", addr=acl_agent.addr, token=reader)
    result = c.run("pull", "--node", "reader")
    assert result.exit_code == 0
    assert "fleet report not written" in result.stderr
    report = a.run("status", "--fleet", "--json")
    assert '"puller"' in report.stdout
    assert '"reader"' not in report.stdout


def test_exit_70_and_one_line_on_an_internal_error(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", broken)
    result = node.run("status")
    assert result.exit_code == 70
    assert result.stderr.startswith("fileconsul: internal error (RuntimeError: simulated bug)")
    assert "Traceback" not in result.output


def run_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run fileconsul with stderr on a pseudo-terminal; its exit code and what it drew."""
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fileconsul", *args], stdout=subprocess.PIPE, stderr=follower
    )
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    proc.communicate(timeout=60)
    os.close(leader)
    return proc.returncode, drawn.decode(errors="replace")


def test_long_pushes_and_pulls_show_a_progress_bar_only_on_a_terminal(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    for i in range(150):
        a.write(f"d{i % 5}/f{i}", str(i))
    base = ["--addr", a.addr, "--prefix", a.prefix]
    code, drawn = run_on_a_terminal(["push", *base, "--basepath", str(a.root)])
    assert code == 0
    assert "pushing" in drawn
    assert "100%" in drawn
    code, drawn = run_on_a_terminal(["pull", *base, "--basepath", str(b.root), "--quiet"])
    assert code == 0
    assert drawn == ""
    c = make_node("c")
    result = c.run("pull")
    assert result.exit_code == 0
    assert "pulling" not in result.output
    assert "%" not in result.output


def test_dc_flag_names_the_datacenter(node: Node, kv: KV) -> None:
    node.write("f", "x")
    assert node.run("push", "--dc", "dc1").exit_code == 0
    assert kv.files(node.prefix) == {"f": b"x"}
    result = node.run("status", "--dc", "nowhere")
    assert result.exit_code == 2
    assert "No path to datacenter" in result.stderr


def test_a_unix_socket_address_works(consul_bin: str, tmp_path: Path) -> None:
    socket_path = tmp_path / "consul.sock"
    agent = Agent(consul_bin, hcl=f'addresses {{ http = "unix://{socket_path}" }}')
    agent.start(wait_leader=False)
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        root = tmp_path / "n"
        root.mkdir()
        (root / "f").write_text("over a socket")
        args = ["--addr", f"unix://{socket_path}", "--prefix", "uds", "--basepath", str(root)]
        for _ in range(100):  # until the dev agent has elected itself
            result = fileconsul("push", *args)
            if result.returncode != 3:
                break
            time.sleep(0.2)
        assert result.returncode == 0, result.stderr
        other = tmp_path / "o"
        other.mkdir()
        result = fileconsul("pull", *args[:-1], str(other))
        assert result.returncode == 0, result.stderr
        assert (other / "f").read_text() == "over a socket"
    finally:
        agent.cleanup()


def test_https_with_consul_cacert_tls_server_name_and_ssl_verify(
    consul_bin: str, tmp_path: Path
) -> None:
    for args in (["tls", "ca", "create"], ["tls", "cert", "create", "-server"]):
        subprocess.run([consul_bin, *args], cwd=tmp_path, check=True, capture_output=True)
    hcl = (
        f'ca_file = "{tmp_path}/consul-agent-ca.pem" '
        f'cert_file = "{tmp_path}/dc1-server-consul-0.pem" '
        f'key_file = "{tmp_path}/dc1-server-consul-0-key.pem" verify_incoming = false'
    )
    agent = Agent(consul_bin, hcl=hcl, https=True).start()
    port = agent.ports["https"]
    try:
        root = tmp_path / "n"
        root.mkdir()
        (root / "f").write_text("over TLS")
        base = {**os.environ, "CONSUL_HTTP_ADDR": f"https://127.0.0.1:{port}"}
        args = ["--prefix", "tls", "--basepath", str(root)]
        # The certificate names server.dc1.consul, not 127.0.0.1; with the CA and that name
        # the connection is verified.
        trusted = {
            **base,
            "CONSUL_CACERT": str(tmp_path / "consul-agent-ca.pem"),
            "CONSUL_TLS_SERVER_NAME": "server.dc1.consul",
        }
        result = fileconsul("push", *args, env=trusted)
        assert result.returncode == 0, result.stderr
        # Without the CA the certificate is refused: exit 3, nothing sent.
        result = fileconsul("status", *args, env=base)
        assert result.returncode == 3
        assert "cannot reach Consul at https://127.0.0.1:" in result.stderr
        # CONSUL_HTTP_SSL_VERIFY=false skips verification, as the consul CLI does.
        result = fileconsul("status", *args, env={**base, "CONSUL_HTTP_SSL_VERIFY": "false"})
        assert result.returncode == 0, result.stderr
    finally:
        agent.cleanup()
