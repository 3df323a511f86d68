"""Drift on a watched node, against a real agent: a hand edit of a managed file shows in
status --fleet, the watch's log and its metrics; with --heal it is put back byte for byte."""

from __future__ import annotations

import json
import socket
import stat
import time
from typing import Any

import httpx

from tests.conftest import Node
from tests.fleet.test_rollout import metric
from tests.processes import background, fileconsul_args, wait_until


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def scrape(url: str) -> str:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return ""


def node_of(a: Node, name: str) -> dict[str, Any]:
    fleet = json.loads(a.run("status", "--fleet", "--json").stdout)
    found: dict[str, Any] = next(n for n in fleet["nodes"] if n["node"] == name)
    return found


def events(output: str, kind: str) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in output.splitlines() if line.startswith("{"))
    return [e for e in lines if e["event"] == kind]


def test_a_hand_edit_shows_as_drifted_in_status_fleet_and_the_metrics(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("conf", "port = 80\n")
    a.write("other", "x\n")
    assert a.run("push", "--no-report").exit_code == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    args = fileconsul_args(
        b, "watch", "--node", "b", "--drift-scan", "0.5", "--log-format", "json",
        "--metrics-addr", f"127.0.0.1:{port}",
    )  # fmt: skip
    with background(args) as watcher:
        wait_until(lambda: node_of(a, "b")["state"] == "current" if b.files() else False)
        assert metric(scrape(url), "fileconsul_drifted_files") == 0
        b.write("conf", "port = 8080\n")
        edited = time.monotonic()
        wait_until(lambda: node_of(a, "b")["state"] == "drifted", 5, "drifted in the report")
        assert time.monotonic() - edited < 5
        report = node_of(a, "b")
        assert (report["drifted"], report["drift_count"], report["revision"]) == (["conf"], 1, 1)
        text = a.run("status", "--fleet")
        assert text.exit_code == 1
        assert "drifted:" in text.stdout
        assert "changed here by hand: conf" in text.stdout
        wait_until(lambda: metric(scrape(url), "fileconsul_drifted_files") == 1, 5)
        (found,) = events(watcher.output(), "drift")
        assert found["level"] == "warning"
        assert found["paths"] == ["conf"]
        assert "1 managed file differs" in found["message"]
        # Not healed: the edit stays, and undoing it by hand ends the drift.
        assert b.read("conf") == b"port = 8080\n"
        b.write("conf", "port = 80\n")
        wait_until(lambda: node_of(a, "b")["state"] == "current", 5, "drift to end")
        assert node_of(a, "b")["drifted"] == []
        wait_until(lambda: metric(scrape(url), "fileconsul_drifted_files") == 0, 5)


def test_heal_puts_the_committed_version_back_byte_for_byte_and_logs_it(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    committed = {"conf": b"port = 80\n\x00binary\xff", "run.sh": b"#!/bin/sh\n", "gone": b"g\n"}
    for path, data in committed.items():
        a.write(path, data, 0o755 if path == "run.sh" else None)
    assert a.run("push", "--no-report").exit_code == 0
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    marker = b.root.parent / "exec-ran"
    args = fileconsul_args(
        b, "watch", "--node", "b", "--drift-scan", "0.5", "--heal", "--log-format", "json",
        "--metrics-addr", f"127.0.0.1:{port}", "--exec", f"echo $FILECONSUL_CHANGED >> {marker}",
    )  # fmt: skip
    with background(args) as watcher:
        wait_until(lambda: b.files() == committed, what="the first apply")
        wait_until(lambda: marker.exists())
        b.write("conf", "edited by hand\n")
        (b.root / "run.sh").chmod(0o644)
        (b.root / "gone").unlink()
        b.write("mine", "not managed\n")
        expected = {**committed, "mine": b"not managed\n"}
        wait_until(lambda: b.files() == expected, 5, "the put-back")
        assert stat.S_IMODE((b.root / "run.sh").stat().st_mode) == 0o755
        wait_until(lambda: events(watcher.output(), "heal") != [], 5, "the heal event")
        (heal,) = events(watcher.output(), "heal")
        assert heal["paths"] == ["conf", "gone", "run.sh"]
        assert heal["message"] == "put back 3 drifted files to r1: conf, gone, run.sh"
        wait_until(lambda: metric(scrape(url), "fileconsul_drift_put_back_total") == 3, 5)
        wait_until(lambda: node_of(a, "b")["state"] == "current", 5, "the report to clear")
        assert node_of(a, "b")["drifted"] == []
        # The put-back ran --exec, as any apply does.
        assert marker.read_text().split() == ["conf", "gone", "run.sh", "conf", "gone", "run.sh"]
    assert (b.root / "mine").exists()


def test_heal_needs_the_scan(node: Node) -> None:
    result = node.run("watch", "--heal", "--push")
    assert result.exit_code == 2
    assert "--heal needs the scan for drift" in result.stderr
