"""Operating a fleet, against real agents: --check and its put-back, halts, --max-parallel,
logs and metrics of a watch run as a service."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from fileconsul.fleet import rollout
from tests.conftest import KV, Node, library_run
from tests.processes import background, fileconsul_args, wait_until


def snapshot(node: Node) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mode, and every directory (with mode -1)."""
    found: dict[str, tuple[bytes, int]] = {}
    for path in sorted(node.root.rglob("*")):
        rel = path.relative_to(node.root).as_posix()
        if rel.split("/")[0] == ".fileconsul":
            continue
        if path.is_dir():
            found[rel] = (b"", -1)
        else:
            found[rel] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return found


def changes_everything(a: Node, b: Node) -> None:
    """b synced at revision 1; revision 2 modifies, re-modes, deletes and adds (a new directory
    too)."""
    a.write("conf/app.conf", "port = 80\n")
    a.write("bin/run", "#!/bin/sh\n", 0o755)
    a.write("gone", "bye\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    a.write("conf/app.conf", "port = BROKEN\n")
    (a.root / "bin/run").chmod(0o644)
    (a.root / "gone").unlink()
    a.write("new/dir/file", "new\n")
    assert a.run("push", "--max-delete", "1").exit_code == 0


def test_a_rejected_check_puts_everything_back_byte_for_byte(
    make_node: Any, kv: KV, tmp_path: Path
) -> None:
    a, b = make_node("a"), make_node("b")
    changes_everything(a, b)
    before = snapshot(b)
    marker = tmp_path / "exec-ran"
    failure = tmp_path / "failure"
    check = "grep -q BROKEN conf/app.conf && { echo 'line one'; echo 'port is BROKEN'; exit 3; }"
    result = b.run(
        "pull",
        "--node",
        "node-b",
        "--check",
        check,
        "--exec",
        f"touch {marker}",
        "--on-failure",
        f'echo "$FILECONSUL_ERROR" > {failure}',
    )
    assert result.exit_code == 8, result.output
    assert "the --check command rejected revision 2 (exit 3)" in result.stderr
    assert snapshot(b) == before
    assert not [p for p in b.root.rglob("*") if ".fileconsul-tmp-" in p.name]
    assert not marker.exists()
    assert "rejected revision 2" in failure.read_text()
    report = json.loads(a.run("status", "--fleet", "--json").stdout)
    (node,) = [n for n in report["nodes"] if n["node"] == "node-b"]
    assert (node["state"], node["check_exit"], node["revision"]) == ("rejected", 3, 2)
    assert node["output"] == "line one\nport is BROKEN"
    # Its record did not move: a check that passes applies it.
    assert b.run("pull", "--check", "true").exit_code == 0
    assert b.read("conf/app.conf") == b"port = BROKEN\n"
    assert not (b.root / "gone").exists()


def test_a_crash_between_the_apply_and_its_check_is_put_back_by_the_next_run(
    make_node: Any,
) -> None:
    a, b = make_node("a"), make_node("b")
    changes_everything(a, b)
    before = snapshot(b)
    # The check kills the pull that runs it: the apply is on disk, with its journal.
    args = fileconsul_args(b, "pull", "--check", "kill -9 $PPID")
    assert subprocess.run(args, capture_output=True, check=False).returncode == -9
    assert (b.root / ".fileconsul" / "apply-journal.json").exists()
    assert b.read("conf/app.conf") == b"port = BROKEN\n"
    result = b.run("pull", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "put back an apply that was interrupted" in result.stderr
    assert snapshot(b) == before
    assert not (b.root / ".fileconsul" / "apply-journal.json").exists()
    assert not [p for p in b.root.rglob("*") if ".fileconsul-tmp-" in p.name]
    assert b.run("pull").exit_code == 0
    assert b.read("conf/app.conf") == b"port = BROKEN\n"


def check_script(tmp_path: Path) -> tuple[str, Path]:
    """A check that logs each run and fails when conf holds BROKEN."""
    log = tmp_path / "checks.log"
    script = tmp_path / "check.sh"
    script.write_text(
        f'echo "$FILECONSUL_REVISION $PWD" >> {log}\n'
        "if grep -q BROKEN conf; then echo 'conf is BROKEN'; exit 1; fi\n"
    )
    return f"sh {script}", log


def test_a_bad_push_stops_at_the_first_node_and_a_fix_reaches_all_five(
    make_node: Any, kv: KV, tmp_path: Path
) -> None:
    a = make_node("a")
    nodes = [make_node(f"w{i}") for i in range(5)]
    a.write("conf", "good\n")
    assert a.run("push", "--no-report").exit_code == 0
    check, log = check_script(tmp_path)
    with ExitStack() as stack:
        procs = [
            stack.enter_context(
                background(
                    fileconsul_args(
                        n, "watch", "--check", check, "--max-parallel", "1", "--node", n.root.name
                    )
                )
            )
            for n in nodes
        ]
        everywhere = {"conf": b"good\n"}
        wait_until(lambda: all(n.files() == everywhere for n in nodes), 60, "r1 everywhere")
        before = {n.root.name: snapshot(n) for n in nodes}
        log.write_text("")
        a.write("conf", "BROKEN\n")
        assert a.run("push", "--no-report").exit_code == 0
        halt = f"{a.prefix}.fileconsul/halt"
        wait_until(lambda: halt in kv.meta(a.prefix), 60, "the halt")
        # Every other node wakes for revision 2, finds it halted, and stays as it was.
        wait_until(
            lambda: sum(p.output().count("held:") for p in procs) >= 4, 60, "the others to hold"
        )
        runs = log.read_text().splitlines()
        assert len(runs) == 1, runs  # applied, checked and put back on exactly one node
        assert all(snapshot(n) == before[n.root.name] for n in nodes)
        fleet = json.loads(a.run("status", "--fleet", "--json").stdout)
        assert fleet["halt"]["revision"] == 2
        assert fleet["halt"]["reason"].startswith("--check exited 1: conf is BROKEN")
        assert fleet["halt"]["applied_before"] == 0
        states = sorted(n["state"] for n in fleet["nodes"])
        assert states == ["halted", "halted", "halted", "halted", "rejected"]
        text = a.run("status", "--fleet").stdout
        assert text.startswith("Revision 2 is HALTED: ")
        # The fix is revision 3: the halt does not hold it, and it reaches all five.
        a.write("conf", "fixed\n")
        assert a.run("push", "--no-report").exit_code == 0
        fixed = {"conf": b"fixed\n"}
        wait_until(lambda: all(n.files() == fixed for n in nodes), 90, "the fix")


def test_a_node_killed_while_holding_a_slot_releases_it(
    make_node: Any, kv: KV, tmp_path: Path
) -> None:
    a, slow, other = make_node("a"), make_node("slow"), make_node("other")
    a.write("conf", "one\n")
    assert a.run("push", "--no-report").exit_code == 0
    assert slow.run("pull", "--no-report").exit_code == 0
    assert other.run("pull", "--no-report").exit_code == 0
    started = tmp_path / "started"
    hang = f"touch {started}; sleep 300"
    holding = fileconsul_args(slow, "watch", "--check", hang, "--max-parallel", "1")
    with background(holding) as holder:
        a.write("conf", "two\n")
        assert a.run("push", "--no-report").exit_code == 0
        wait_until(started.exists, 30, "the slow node to hold the slot")
        with background(fileconsul_args(other, "watch", "--max-parallel", "1")) as waiting:
            time.sleep(2)
            assert other.read("conf") == b"one\n"  # waiting for the slot
            os.kill(holder.process.pid, 9)
            # Its session would end with its TTL; ended now, the path after is the same.
            holders = kv.meta(slow.prefix)[f"{slow.prefix}.fileconsul/slots/holders"]
            for session in json.loads(holders["value"])["Holders"]:
                httpx.put(f"{kv.url}/v1/session/destroy/{session}")
            wait_until(lambda: other.read("conf") == b"two\n", 60, "the slot to be released")
            assert "slot" in waiting.output()


def test_watch_logs_one_json_object_per_event(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "1")
    assert a.run("push").exit_code == 0
    args = fileconsul_args(b, "watch", "--log-format", "json", "--exec", "true")
    with background(args) as watcher:
        wait_until(lambda: (b.root / "f").exists(), what="the first apply")
        a.write("f", "2")
        assert a.run("push").exit_code == 0

        def hooks() -> list[dict[str, Any]]:
            events = (json.loads(line) for line in watcher.output().splitlines())
            return [e for e in events if e["event"] == "hook"]

        wait_until(lambda: len(hooks()) == 2, what="the second hook")
        lines = [json.loads(line) for line in watcher.output().splitlines()]
    assert all({"time", "level", "event", "message"} <= set(e) for e in lines)
    start = lines[0]
    assert start["event"] == "start"
    assert (start["prefix"], start["basepath"], start["revision"]) == (b.prefix, str(b.root), 0)
    assert start["addr"] == f"http://{b.addr}"
    applied = [e for e in lines if e["event"] == "apply"]
    assert [(e["revision"], e["paths"]) for e in applied] == [(1, ["f"]), (2, ["f"])]
    ran = [e for e in lines if e["event"] == "hook"]
    assert [(e["revision"], e["exit"]) for e in ran] == [(1, 0), (2, 0)]


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


def test_metrics_move_after_a_push(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "1")
    assert a.run("push").exit_code == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    with background(fileconsul_args(b, "watch", "--metrics-addr", f"127.0.0.1:{port}")):
        wait_until(lambda: (b.root / "f").exists(), what="the first apply")
        wait_until(lambda: _scrape(url) is not None, what="the metrics server")
        first = _scrape(url) or ""
        assert metric(first, "fileconsul_revision") == 1
        assert metric(first, "fileconsul_applies_total") == 1
        a.write("f", "2")
        assert a.run("push").exit_code == 0
        wait_until(lambda: metric(_scrape(url) or "", "fileconsul_revision") == 2)
        second = _scrape(url) or ""
    assert metric(second, "fileconsul_applies_total") == 2
    assert metric(second, "fileconsul_head_revision") == 2
    assert metric(second, "fileconsul_wakeups_total") >= 1
    assert metric(second, "fileconsul_received_bytes_total") > metric(
        first, "fileconsul_received_bytes_total"
    )
    assert metric(second, "fileconsul_last_apply_timestamp_seconds") > time.time() - 60


def _scrape(url: str) -> str | None:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None


def test_random_delay_waits_before_applying(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    args = fileconsul_args(b, "watch", "--random-delay", "1.5", "--log-format", "json")
    with background(args) as watcher:
        wait_until(lambda: '"event": "start"' in watcher.output())
        a.write("f", "1")
        assert a.run("push").exit_code == 0
        wait_until(lambda: (b.root / "f").exists(), what="the delayed apply")
        events = [json.loads(line) for line in watcher.output().splitlines()]
    delays = [e["seconds"] for e in events if e["event"] == "delay"]
    assert delays
    assert all(0 <= s <= 1.5 for s in delays)


def test_a_watcher_held_by_a_halt_is_let_go_by_a_commit_that_landed_before_it_blocked(
    make_node: Any,
) -> None:
    """A watcher held back at a halted revision blocks on the head and the halt from the
    index it reads after the delivery; a fix committed in between is already in that index,
    so the halt must count as lifted, or the watcher would wait for the next change."""
    a = make_node("a")
    for text in ("one\n", "two\n"):
        a.write("app.conf", text)
        assert a.run("push").exit_code == 0
    run = library_run(a)
    try:
        stop = rollout.Halt(2, "picky", time.time(), "--check exited 1")
        rollout.halt(run.client, a.prefix, stop)
        assert rollout.still_halted(run.client, a.prefix, stop, stale=False) is not None
        a.write("app.conf", "three\n")
        assert a.run("push").exit_code == 0
        assert rollout.still_halted(run.client, a.prefix, stop, stale=False) is None
    finally:
        run.client.close()
