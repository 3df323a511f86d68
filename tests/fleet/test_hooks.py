"""The operator's commands around an apply, against a real agent: when they run, how long, how
much of what they print is kept, where it goes, and the exit codes they give."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import KV, Node
from tests.processes import background, fileconsul_args, wait_until


def run_cli(node: Node, command: str, *extra: str, timeout: float = 60) -> tuple[int, str, str]:
    """A fileconsul command in its own process: exit code, stdout, stderr (kept apart)."""
    done = subprocess.run(
        fileconsul_args(node, command, *extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout, done.stderr


def synced_pair(make_node: Any) -> tuple[Node, Node]:
    a, b = make_node("a"), make_node("b")
    a.write("conf", "1\n")
    assert a.run("push", "--no-report").exit_code == 0
    assert b.run("pull", "--no-report").exit_code == 0
    return a, b


def test_a_check_runs_only_when_an_apply_changed_something(
    make_node: Any, kv: KV, tmp_path: Path
) -> None:
    a, b = synced_pair(make_node)
    ran = tmp_path / "ran"
    failing = f"echo ran >> {ran}; exit 3"
    result = b.run("pull", "--check", failing)
    assert result.exit_code == 0, result.output
    assert not ran.exists()
    code, _, err = run_cli(b, "watch", "--once", "--check", failing, "--max-parallel", "1")
    assert code == 0, err
    assert not ran.exists()
    meta = kv.meta(a.prefix)
    assert f"{a.prefix}.fileconsul/halt" not in meta
    assert not [k for k in meta if "/slots/" in k]
    a.write("conf", "2\n")
    assert a.run("push", "--no-report").exit_code == 0
    assert b.run("pull", "--check", failing).exit_code == 8
    assert ran.read_text() == "ran\n"


def test_a_hung_check_is_killed_with_its_children_at_the_timeout(
    make_node: Any, tmp_path: Path
) -> None:
    a, b = synced_pair(make_node)
    a.write("conf", "2\n")
    assert a.run("push", "--no-report").exit_code == 0
    pids = tmp_path / "pids"
    hung = f"sleep 300 & echo $! > {pids}; sleep 300"
    result = b.run("pull", "--check", hung, "--hook-timeout", "1")
    assert result.exit_code == 8, result.output
    assert "killed after 1s" in result.stderr
    assert b.read("conf") == b"1\n"  # put back
    child = int(pids.read_text())
    wait_until(lambda: not Path(f"/proc/{child}").exists(), 5, "the hook's child to be gone")


def test_a_watcher_waiting_for_a_slot_stops_at_once_on_sigterm(
    make_node: Any, tmp_path: Path
) -> None:
    a, slow = synced_pair(make_node)
    waiting_node = make_node("waiting")
    assert waiting_node.run("pull", "--no-report").exit_code == 0
    started = tmp_path / "started"
    holder_args = fileconsul_args(
        slow, "watch", "--check", f"touch {started}; sleep 300", "--max-parallel", "1"
    )
    with background(holder_args) as holder:
        a.write("conf", "2\n")
        assert a.run("push", "--no-report").exit_code == 0
        wait_until(started.exists, 30, "the slow node to hold the slot")
        args = fileconsul_args(waiting_node, "watch", "--max-parallel", "1")
        with background(args) as waiting:
            wait_until(lambda: "waiting for one of 1 slots" in waiting.output(), 30, "the wait")
            stopped = time.monotonic()
            waiting.signal(signal.SIGTERM)
            assert waiting.wait(10) == 0
            assert time.monotonic() - stopped < 5
            assert waiting_node.read("conf") == b"1\n"
        os.killpg(holder.process.pid, signal.SIGKILL)  # and its check: nothing to wait for


def test_what_a_hook_prints_is_streamed_and_memory_stays_flat(make_node: Any) -> None:
    a, b = synced_pair(make_node)
    a.write("conf", "2\n")
    assert a.run("push", "--no-report").exit_code == 0
    # 300 MB of output: buffered whole it would be 300 MB of memory, kept as a tail it is not.
    loud = "yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 300000000"
    process = subprocess.Popen(
        fileconsul_args(b, "pull", "--no-report", "--check", loud),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0
    assert usage.ru_maxrss < 150 * 1024  # kilobytes: a Python process with its libraries


def test_a_rejection_with_a_long_last_line_still_writes_its_halt_and_report(
    make_node: Any, kv: KV
) -> None:
    a, b = synced_pair(make_node)
    a.write("conf", "2\n")
    assert a.run("push", "--no-report").exit_code == 0
    long_line = f"{sys.executable} -c 'print(\"x\" * 700000)'; exit 1"
    code, _, err = run_cli(b, "watch", "--once", "--check", long_line, "--halt-on-failure")
    assert code == 8, err
    meta = kv.meta(a.prefix)
    halt = json.loads(meta[f"{a.prefix}.fileconsul/halt"]["value"])
    assert halt["revision"] == 2
    assert halt["reason"].startswith("--check exited 1: xxx")
    assert len(halt["reason"]) <= 1000
    report = json.loads(meta[f"{a.prefix}.fileconsul/nodes/{node_name(kv)}"]["value"])
    assert report["result"] == "rejected"
    assert 0 < len(report["output"]) < 1000


def node_name(kv: KV) -> str:
    import httpx

    name: str = httpx.get(f"{kv.url}/v1/agent/self").json()["Config"]["NodeName"]
    return name


def test_json_output_is_only_json_and_hook_output_goes_to_stderr(make_node: Any) -> None:
    a, b = synced_pair(make_node)
    a.write("conf", "2\n")
    assert a.run("push", "--no-report").exit_code == 0
    code, out, err = run_cli(
        b, "pull", "--json", "--check", "echo checking", "--exec", "echo from-exec; echo e >&2"
    )
    assert code == 0, err
    data = json.loads(out)  # one object, nothing after it
    assert data["check"]["exit"] == 0
    assert data["hook"] == {
        "command": "echo from-exec; echo e >&2",
        "exit": 0,
        "output": "from-exec\ne",
    }
    assert "from-exec" in err
    a.write("conf", "3\n")
    assert a.run("push", "--no-report").exit_code == 0
    code, out, err = run_cli(
        b, "watch", "--once", "--log-format", "json", "--exec", "echo from-exec"
    )
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events if e["event"] in ("apply", "hook")] == ["apply", "hook"]
    assert "from-exec" in err


def test_watch_push_in_json_mode_logs_its_pushes_as_events(make_node: Any) -> None:
    a, b = synced_pair(make_node)
    args = fileconsul_args(b, "watch", "--push", "--log-format", "json")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1.0)
        b.write("local-edit", "pushed by the watcher\n")
        wait_until(lambda: "local-edit" in a.run("status").stdout, 20, "the autopush")
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    events = [json.loads(line) for line in out.splitlines()]
    pushed = [e for e in events if e["event"] == "push"]
    assert pushed
    assert pushed[0]["paths"] == ["local-edit"]


def test_a_failing_exec_is_exit_9_and_says_so_in_json(make_node: Any) -> None:
    a, b = synced_pair(make_node)
    a.write("conf", "2\n")
    assert a.run("push", "--no-report").exit_code == 0
    code, out, _ = run_cli(b, "pull", "--json", "--exec", "exit 3")
    assert code == 9
    data = json.loads(out)
    assert data["hook"]["command"] == "exit 3"
    assert data["hook"]["exit"] == 3
    assert data["exit_code"] == 9
    a.write("conf", "3\n")
    assert a.run("push", "--no-report").exit_code == 0
    code, _, _ = run_cli(b, "watch", "--once", "--exec", "exit 4")
    assert code == 9
    a.write("conf", "4\n")
    assert a.run("push", "--no-report").exit_code == 0
    handler = b.run("pull", "--exec", "exit 5", env={"CONSUL_INDEX": "1"}, input="null")
    assert handler.exit_code == 0
    a.write("conf", "5\n")
    assert a.run("push", "--no-report").exit_code == 0
    strict = b.run("pull", "--strict", "--exec", "exit 5", env={"CONSUL_INDEX": "1"}, input="null")
    assert strict.exit_code == 9


def test_a_bad_metrics_address_is_a_usage_error_naming_it(node: Node) -> None:
    node.write("f", "1\n")
    assert node.run("push").exit_code == 0
    code, _, err = run_cli(node, "watch", "--once", "--metrics-addr", "127.0.0.1:99999")
    assert code == 2
    assert "127.0.0.1:99999" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        code, _, err = run_cli(node, "watch", "--once", "--metrics-addr", addr)
    assert code == 2
    assert f"cannot serve metrics on {addr} (Address already in use)" in err
