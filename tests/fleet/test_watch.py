"""Watch mode, the consul-watch handler, hooks and the fleet report, against real agents."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KV, Node
from tests.consul_agent import Agent
from tests.processes import RecordingProxy, background, fileconsul_args, wait_until, with_fault


def hook_script(tmp_path: Path) -> tuple[str, Path]:
    """A hook that appends its environment's changed paths and its stdin to a log."""
    log = tmp_path / "hook.log"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, sys\n"
        "payload = json.load(sys.stdin)\n"
        f"with open({str(log)!r}, 'a') as out:\n"
        "    out.write(json.dumps({'env': os.environ['FILECONSUL_CHANGED'].split('\\n'),\n"
        "                          'changes': payload['changes'],\n"
        "                          'revision': payload['revision']}) + '\\n')\n"
    )
    return f"{sys.executable} {script}", log


def hook_calls(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_a_push_reaches_a_watching_node_and_the_hook_runs_once_per_change(
    make_node: Any, tmp_path: Path, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    hook, log = hook_script(tmp_path)
    with background(fileconsul_args(b, "watch", "--exec", hook)) as watcher:
        a.write("conf/app.json", '{"v": 1}')
        assert a.run("push").exit_code == 0
        wait_until(lambda: (b.root / "conf/app.json").exists(), what="the first push")
        assert b.read("conf/app.json") == b'{"v": 1}'
        wait_until(lambda: len(hook_calls(log)) == 1, what="the hook")
        a.write("conf/app.json", '{"v": 2}')
        a.write("bin/run", "#!/bin/sh\n", 0o755)
        assert a.run("push").exit_code == 0
        wait_until(lambda: len(hook_calls(log)) == 2, what="the second hook")
        # A wake-up that changes nothing for this node runs no hook.
        kv.txn_set({f"{a.prefix}/folder/": b""})
        subprocess.run(["sleep", "1"], check=True)
        assert watcher.process.poll() is None
    calls = hook_calls(log)
    assert len(calls) == 2
    assert calls[0]["env"] == ["conf/app.json"]
    assert calls[1]["env"] == ["bin/run", "conf/app.json"]
    assert calls[1]["changes"] == [
        {"path": "bin/run", "change": "added"},
        {"path": "conf/app.json", "change": "modified"},
    ]
    assert b.read("conf/app.json") == b'{"v": 2}'
    assert os.access(b.root / "bin/run", os.X_OK)


def test_watch_picks_up_a_key_written_with_consul_kv_put(
    make_node: Any, consul_bin: str, agent: Agent
) -> None:
    b = make_node("b")
    with background(fileconsul_args(b, "watch")):
        wait_until(lambda: (b.root / ".fileconsul").exists(), what="the watch to start")
        subprocess.run(
            [consul_bin, "kv", "put", f"-http-addr={agent.addr}", f"{b.prefix}/motd", "hi"],
            check=True,
            capture_output=True,
        )
        wait_until(lambda: (b.root / "motd").exists(), what="the kv put")
    assert b.read("motd") == b"hi"


def test_watch_never_overwrites_a_local_edit_and_goes_on(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "base")
    a.write("g", "base")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    b.write("f", "local edit")
    with background(fileconsul_args(b, "watch")) as watcher:
        a.write("f", "remote edit")
        assert a.run("push").exit_code == 0
        wait_until(lambda: "changed on both sides" in watcher.output(), what="the conflict")
        assert b.read("f") == b"local edit"
        # Resolved locally (the remote version taken by hand), the watch carries on.
        b.write("f", "remote edit")
        a.write("g", "next")
        assert a.run("push").exit_code == 0
        wait_until(lambda: b.read("g") == b"next", what="the next change")
        assert watcher.process.poll() is None
    assert b.read("f") == b"remote edit"


def test_sigterm_stops_the_watch_cleanly_with_no_partial_file(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    payload = {f"d{i % 8}/f{i:03}": os.urandom(20_000) for i in range(400)}
    for rel, data in payload.items():
        a.write(rel, data)
    assert a.run("push").exit_code == 0
    with background(fileconsul_args(b, "watch")) as watcher:
        wait_until(lambda: (b.root / "d0").exists(), timeout=30, what="the apply to start")
        watcher.signal(signal.SIGTERM)
        assert watcher.wait() == 0
    on_disk = b.files()
    assert all(on_disk[rel] == payload[rel] for rel in on_disk)
    assert not [p for p in b.root.rglob("*") if ".fileconsul-tmp-" in p.name]
    assert b.run("pull").exit_code == 0
    assert b.files() == payload


def test_watch_once_applies_what_is_pending_and_exits_like_pull(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "1")
    assert a.run("push").exit_code == 0
    result = b.run("watch", "--once")
    assert result.exit_code == 0, result.output
    assert b.read("f") == b"1"
    b.write("f", "mine")
    a.write("f", "theirs")
    assert a.run("push", "--force").exit_code == 0
    assert b.run("watch", "--once").exit_code == 4


@pytest.mark.parametrize(("flag", "stale"), [((), True), (("--consistent",), False)])
def test_watch_reads_stale_by_default_and_from_the_leader_with_consistent(
    flag: tuple[str, ...], stale: bool, make_node: Any
) -> None:
    a, b = make_node("a"), make_node("b")
    proxy = RecordingProxy(b.addr)
    try:
        through = Node(b.root, proxy.addr, b.prefix)
        with background(fileconsul_args(through, "watch", "--no-report", *flag)):
            a.write("f", "1")
            assert a.run("push").exit_code == 0
            wait_until(lambda: (b.root / "f").exists(), what="the apply")
    finally:
        proxy.close()
    head = [
        line for line in proxy.lines if line.startswith(f"GET /v1/kv/{b.prefix}.fileconsul/head")
    ]
    assert head
    asked = [("?stale" in line or "&stale" in line) for line in head]
    assert asked == [stale] * len(head), head


def test_watch_push_sends_local_edits_including_saves_by_rename(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    with (
        background(fileconsul_args(a, "watch", "--push")),
        background(fileconsul_args(b, "watch")),
    ):
        a.write("notes.txt", "first")
        wait_until(lambda: (b.root / "notes.txt").exists(), what="the first local push")
        tmp = a.root / ".notes.txt.swp"
        tmp.write_text("second")
        tmp.rename(a.root / "notes.txt")
        wait_until(lambda: b.read("notes.txt") == b"second", what="the save by rename")
    assert "notes.txt.swp" not in b.files()


def test_on_failure_runs_when_the_hook_fails(make_node: Any, tmp_path: Path) -> None:
    a, b = make_node("a"), make_node("b")
    marker = tmp_path / "failed"
    a.write("f", "1")
    assert a.run("push").exit_code == 0
    result = b.run(
        "pull", "--exec", "exit 3", "--on-failure", f'echo "$FILECONSUL_ERROR" > {marker}'
    )
    assert result.exit_code == 9  # the change stands; the hook failed
    assert "hook exited 3" in result.stderr
    assert marker.read_text().strip() == "hook exited 3"


def test_the_watcher_survives_an_agent_restart_and_converges(
    consul_bin: str, make_node: Any
) -> None:
    own = Agent(consul_bin).start()
    try:
        a, b = make_node("a", addr=own.addr), make_node("b", addr=own.addr)
        with background(fileconsul_args(b, "watch", "--no-report")) as watcher:
            a.write("f", "before")
            assert a.run("push").exit_code == 0
            wait_until(lambda: (b.root / "f").exists(), what="the first push")
            own.stop()
            wait_until(lambda: "cannot reach Consul" in watcher.output(), what="the outage")
            own.start()
            # A dev agent starts empty: the tree is pushed again, from scratch.
            a_again = make_node("a2", addr=own.addr)
            a_again.write("f", "after")
            assert a_again.run("push").exit_code == 0
            wait_until(lambda: b.read("f") == b"after", timeout=40, what="convergence")
            assert watcher.process.poll() is None
    finally:
        own.cleanup()


def test_fleet_status_shows_a_lagging_node(make_node: Any) -> None:
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    a.write("f", "1")
    assert a.run("push", "--node", "node-a").exit_code == 0
    assert b.run("pull", "--node", "node-b").exit_code == 0
    assert c.run("pull", "--node", "node-c").exit_code == 0
    result = a.run("status", "--fleet", "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0
    assert [(n["node"], n["state"]) for n in report["nodes"]] == [
        ("node-a", "current"),
        ("node-b", "current"),
        ("node-c", "current"),
    ]
    a.write("f", "2")
    assert a.run("push", "--node", "node-a").exit_code == 0
    assert b.run("pull", "--node", "node-b").exit_code == 0
    result = a.run("status", "--fleet")
    assert result.exit_code == 1
    assert "lagging:" in result.stdout
    assert "node-c" in result.stdout
    assert "2 of 3 nodes current." in result.stdout
    report = json.loads(a.run("status", "--fleet", "--json").stdout)
    states = {n["node"]: n["state"] for n in report["nodes"]}
    assert states == {"node-a": "current", "node-b": "current", "node-c": "lagging"}
    assert report["all_current"] is False


def test_a_push_that_leaves_changes_to_pull_does_not_report_current(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "1")
    assert a.run("push", "--no-report").exit_code == 0
    b.write("g", "2")
    assert b.run("push", "--node", "node-b").exit_code == 0
    report = json.loads(a.run("status", "--fleet", "--json").stdout)
    assert report["nodes"] == []


def test_fleet_status_shows_a_failed_node(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "1")
    assert a.run("push", "--no-report").exit_code == 0
    b.write("f", "local")
    assert b.run("pull", "--node", "node-b").exit_code == 4
    report = json.loads(a.run("status", "--fleet", "--json").stdout)
    assert report["nodes"][0]["state"] == "failed"
    assert report["nodes"][0]["result"] == "conflict"


def test_reports_do_not_wake_watchers_or_look_like_changes(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "1")
    assert a.run("push").exit_code == 0
    before = kv.tree(a.prefix)
    assert b.run("pull", "--node", "node-b").exit_code == 0
    assert kv.tree(a.prefix) == before
    assert b.run("status").exit_code == 0


# -- consul watch -----------------------------------------------------------------------


def consul_watch_args(consul_bin: str, node: Node, kind: str, *extra: str) -> list[str]:
    handler = " ".join(fileconsul_args(node, "pull", *extra))
    if kind == "keyprefix":
        target = ["-type", "keyprefix", "-prefix", f"{node.prefix}/"]
    else:
        target = ["-type", "key", "-key", f"{node.prefix}.fileconsul/head"]
    return [consul_bin, "watch", f"-http-addr={node.addr}", *target, handler]


@pytest.mark.parametrize("kind", ["keyprefix", "key"])
def test_consul_watch_runs_pull_as_its_handler(kind: str, consul_bin: str, make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    env = {**os.environ, "SHELL": "/bin/sh"}
    with background(consul_watch_args(consul_bin, b, kind, "--node", "handler"), env) as watch:
        wait_until(lambda: (b.root / ".fileconsul").exists(), what="the start-up run")
        a.write("conf/one", "1")
        assert a.run("push").exit_code == 0
        wait_until(lambda: (b.root / "conf/one").exists(), what="the first push")
        a.write("conf/one", "2")
        a.write("conf/two", "2")
        assert a.run("push").exit_code == 0
        wait_until(lambda: (b.root / "conf/two").exists(), what="the second push")
        # An error (here a conflict) is reported, and consul watch keeps watching.
        b.write("conf/one", "local")
        a.write("conf/one", "3")
        assert a.run("push").exit_code == 0
        wait_until(lambda: "changed on both sides" in watch.output(), what="the conflict")
        a.write("conf/three", "3")
        b.write("conf/one", "3")
        assert a.run("push").exit_code == 0
        wait_until(lambda: (b.root / "conf/three").exists(), what="the watch to go on")
        assert watch.process.poll() is None
    assert b.files() == {"conf/one": b"3", "conf/two": b"2", "conf/three": b"3"}


def keyprefix_payload(kv: KV, prefix: str) -> str:
    """What `consul watch -type keyprefix` hands its handler for the tree as it is now."""
    return json.dumps(
        [
            {
                "Key": key,
                "Value": base64.b64encode(e["value"]).decode(),
                "Flags": e["flags"],
                "ModifyIndex": e["index"],
                "CreateIndex": 1,
                "LockIndex": 0,
                "Session": "",
            }
            for key, e in kv.tree(prefix).items()
        ]
    )


def received(result: Any) -> int:
    """The bytes received from Consul, from the -v line."""
    line = next(line for line in result.stderr.splitlines() if "bytes received" in line)
    return int(line.split(",")[1].split()[0])


def test_handler_takes_committed_values_from_the_keyprefix_payload(make_node: Any, kv: KV) -> None:
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    big = os.urandom(200_000)
    a.write("f", big)
    assert a.run("push").exit_code == 0
    payload = keyprefix_payload(kv, a.prefix)
    env = {"CONSUL_INDEX": "7"}
    result = b.run("pull", "--no-report", "-v", input=payload, env=env)
    assert result.exit_code == 0, result.output
    assert b.read("f") == big
    assert received(result) < 20_000  # the value came with the payload, not from Consul
    # A payload older than the head: its value is no longer the committed one.
    a.write("f", "newer")
    assert a.run("push").exit_code == 0
    result = c.run("pull", "--no-report", input=payload, env=env)
    assert result.exit_code == 0, result.output
    assert c.read("f") == b"newer"


@pytest.mark.parametrize("payload", ["{not json", '"a string"', '[{"NoKey": 1}]', "[1, 2]"])
def test_a_malformed_handler_payload_is_a_clear_error(payload: str, node: Node) -> None:
    env = {"CONSUL_INDEX": "7"}
    result = node.run("pull", input=payload, env=env)
    assert result.exit_code == 0
    assert "consul watch payload" in result.stderr
    strict = node.run("pull", "--strict", input=payload, env=env)
    assert strict.exit_code == 5
    assert "consul watch payload" in strict.stderr


def test_a_payload_for_another_prefix_is_refused(node: Node) -> None:
    payload = json.dumps([{"Key": "other/f", "Value": "eA==", "Flags": 0, "ModifyIndex": 1}])
    result = node.run("pull", "--strict", input=payload, env={"CONSUL_INDEX": "7"})
    assert result.exit_code == 5
    assert "outside" in result.stderr
    assert node.files() == {}


def test_null_payload_reads_consul(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "1")
    assert a.run("push").exit_code == 0
    result = b.run("pull", input="null", env={"CONSUL_INDEX": "1"})
    assert result.exit_code == 0
    assert b.read("f") == b"1"


def test_on_failure_runs_when_applying_fails(make_node: Any, tmp_path: Path) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "theirs")
    assert a.run("push").exit_code == 0
    b.write("f", "mine")
    marker = tmp_path / "why"
    result = b.run(
        "pull",
        "--exec",
        f"touch {tmp_path / 'hook-ran'}",
        "--on-failure",
        f'echo "$FILECONSUL_ERROR" > {marker}',
    )
    assert result.exit_code == 4
    assert "changed on both sides" in marker.read_text()
    assert not (tmp_path / "hook-ran").exists()


def test_sigint_stops_the_watch_cleanly(make_node: Any) -> None:
    b = make_node("b")
    with background(fileconsul_args(b, "watch")) as watcher:
        wait_until(lambda: (b.root / ".fileconsul").exists(), what="the watch to start")
        watcher.signal(signal.SIGINT)
        assert watcher.wait() == 0
        assert "Traceback" not in watcher.output()


def test_watch_push_reports_a_conflict_and_never_forces_it(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "base")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    a.write("f", "edited on a")
    b.write("f", "edited on b")
    assert b.run("push").exit_code == 0
    with background(fileconsul_args(a, "watch", "--push")) as watcher:
        wait_until(
            lambda: watcher.output().count("changed on both sides") >= 2,
            what="the conflict to be reported by the pull and by the push",
        )
        assert watcher.process.poll() is None
    assert kv.files(a.prefix)["f"] == b"edited on b"
    assert a.read("f") == b"edited on a"


def test_writes_by_another_tool_reach_a_watcher_at_once(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("seed", "s\n")
    assert a.run("push").exit_code == 0
    with background(fileconsul_args(b, "watch", "--no-report")):
        wait_until(lambda: (b.root / "seed").exists(), what="the first apply")
        for i in range(20):
            kv.put(f"{a.prefix}/etc/foreign-{i}.conf", f"written by hand {i}\n".encode())
            wait_until(
                lambda i=i: (b.root / f"etc/foreign-{i}.conf").exists(),  # type: ignore[misc]
                5,
                f"foreign write {i}",
            )
        assert b.read("etc/foreign-19.conf") == b"written by hand 19\n"


def test_a_watcher_never_applies_a_push_that_died_before_its_head(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    first = {f"d/f{i:03}": f"first {i}\n".encode() for i in range(150)}
    for rel, data in first.items():
        a.write(rel, data)
    assert a.run("push").exit_code == 0
    with background(fileconsul_args(b, "watch", "--no-report")) as watcher:
        wait_until(lambda: b.files() == first, what="the first revision")
        for rel in first:
            a.write(rel, b"second\n")
        assert with_fault(a, "kill:3", "push").returncode == -signal.SIGKILL
        wait_until(lambda: "never committed" in watcher.output(), 10, "the dead push noticed")
        assert b.files() == first
        a.write("d/f000", "third\n")
        assert a.run("push").exit_code == 0
        wait_until(lambda: b.read("d/f000") == b"third\n", what="the next push")
        assert b.read("d/f001") == b"second\n"
