"""What a new operator hit, each case reproduced against a real agent: ignore rules, a wiped
prefix, temporary names, nested prefixes, status as a preflight, a mistyped basepath, bad
addresses, links in the target, options before the command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import KV, Node
from tests.consul_agent import Agent
from tests.processes import fileconsul_args


def test_ignoring_files_stops_syncing_them_on_this_node_and_deletes_nothing(
    make_node: Any, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("big.bin", "big")
    a.write("blob.bin", "blob")
    a.write("conf", "c")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    a.write(".fileconsulignore", "*.bin\n")
    result = a.run("push")
    assert result.exit_code == 0, result.output
    assert "2 tracked paths are now ignored on this node (big.bin, blob.bin)" in result.stderr
    assert "they stay in Consul" in result.stderr
    assert "deleted" not in result.stdout
    assert sorted(kv.files(a.prefix)) == [".fileconsulignore", "big.bin", "blob.bin", "conf"]
    # Said once; and an ignored path is not shown, pushed, pulled or deleted here.
    (a.root / "big.bin").unlink()
    b.write("blob.bin", "changed on b")
    assert b.run("push").exit_code == 0
    status = a.run("status")
    assert status.exit_code == 0, status.output
    assert "now ignored" not in a.run("push").stderr
    assert a.run("pull").exit_code == 0
    assert not (a.root / "big.bin").exists()
    assert a.read("blob.bin") == b"blob"
    assert kv.files(a.prefix)["big.bin"] == b"big"
    # The other node, without the rule once it pulls the ignore file, keeps them too.
    assert b.run("pull").exit_code == 0
    assert b.read("big.bin") == b"big"


@pytest.mark.parametrize("wipe", ["files", "everything"])
def test_a_wiped_prefix_is_gone_not_deleted_and_a_push_recreates_it(
    wipe: str, make_node: Any, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    for i in range(6):
        a.write(f"f{i}", f"{i}\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    target = f"{a.prefix}/" if wipe == "files" else a.prefix
    httpx.delete(f"{kv.url}/v1/kv/{target}", params={"recurse": ""}).raise_for_status()
    status = b.run("status")
    assert status.exit_code == 1
    assert "are gone (deleted by another tool, not by a push)" in status.stderr
    pulled = b.run("pull")
    assert pulled.exit_code == 0, pulled.output
    assert len(b.files()) == 6  # nothing deleted here
    pushed = a.run("push")
    assert pushed.exit_code == 0, pushed.output
    assert kv.files(a.prefix) == a.files()
    assert b.run("status").exit_code == 0


def test_a_remote_key_named_like_a_temporary_file_is_skipped_and_reported(
    node: Node, kv: KV
) -> None:
    kv.txn_set({f"{node.prefix}/.fileconsul-tmp-x": b"x", f"{node.prefix}/ok": b"ok"})
    result = node.run("pull")
    assert result.exit_code == 5
    assert "'.fileconsul-tmp-' are fileconsul's temporary files" in result.stderr
    assert node.files() == {"ok": b"ok"}
    assert node.run("status").exit_code == 5
    assert "deleted" not in node.run("status").stdout


def test_nested_prefixes_are_refused_both_ways(make_node: Any, kv: KV) -> None:
    outer, inner = make_node("outer"), make_node("inner")
    outer.write("f", "outer")
    assert outer.run("push").exit_code == 0
    inner.write("g", "inner")
    result = inner.run("push", "--prefix", f"{outer.prefix}/sub")
    assert result.exit_code == 5
    assert f"is inside the fileconsul tree {outer.prefix}" in result.stderr
    assert kv.files(outer.prefix) == {"f": b"outer"}
    # A tree pushed first below a prefix that has none yet: the outer push refuses.
    deep = f"{outer.prefix}-2/sub"
    assert inner.run("push", "--prefix", deep).exit_code == 0
    outer.write("f", "outer 2")
    result = outer.run("push", "--prefix", f"{outer.prefix}-2")
    assert result.exit_code == 5
    assert "holds another fileconsul tree below it" in result.stderr
    assert f"{deep}.fileconsul/" in result.stderr


def test_status_names_everything_a_push_or_pull_would_refuse(node: Node, kv: KV) -> None:
    for i in range(4):
        node.write(f"f{i}", str(i))
    assert node.run("push").exit_code == 0
    for i in range(3):
        (node.root / f"f{i}").unlink()
    node.write("back\\slash", "x")
    node.write(os.fsdecode(b"latin1-\xe9"), "x")
    node.write("line\nbreak", "x")
    node.write("too-big", os.urandom(512 * 1024 + 1))
    result = node.run("status")
    assert result.exit_code == 5
    refused = result.stdout.split("Refused (a push or pull would stop on these):\n")[1]
    assert refused.splitlines() == [
        "    local file 'back\\\\slash': backslash in name",
        "    local file 'latin1-\\udce9': name is not valid UTF-8",
        "    local file 'line\\nbreak': control character in name",
        "    too-big is 524289 bytes, over Consul's 524288-byte value limit",
        "    refusing to delete 3 of 4 files in Consul",
    ]
    push = node.run("push")
    assert push.exit_code == 5
    for name in ("'back\\\\slash'", "'latin1-\\udce9'", "'line\\nbreak'"):
        assert name in push.stderr  # every bad name, in one error
    assert sorted(kv.files(node.prefix)) == ["f0", "f1", "f2", "f3"]


def test_status_exits_4_on_a_conflict_and_1_when_a_pull_fixes_it(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "1")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    a.write("f", "2")
    assert a.run("push").exit_code == 0
    assert b.run("status").exit_code == 1
    b.write("f", "mine")
    assert b.run("status").exit_code == 4


def test_a_mistyped_basepath_is_refused_and_nothing_is_created(node: Node, tmp_path: Path) -> None:
    missing = tmp_path / "nope3"
    for command in ("status", "push", "watch", "diff"):
        result = node.run(command, "--basepath", str(missing))
        assert result.exit_code == 2, (command, result.output)
        assert f"the basepath {missing} does not exist" in result.stderr
        assert not missing.exists()
    node.write("f", "x")
    assert node.run("push").exit_code == 0
    result = node.run("pull", "--basepath", str(missing))
    assert result.exit_code == 0, result.output
    assert f"created the basepath {missing}" in result.stderr
    assert (missing / "f").read_text() == "x"


def run(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fileconsul", *args], capture_output=True, text=True, **kw
    )


def test_bad_addresses_are_named_with_the_right_exit_code(node: Node, tmp_path: Path) -> None:
    result = run("status", "--addr", "foo:bar", "--basepath", str(tmp_path))
    assert result.returncode == 2
    assert "invalid Consul address 'foo:bar'" in result.stderr
    unknown = node.run("status", "--dc", "nosuchdc")
    assert unknown.exit_code == 2
    assert "Consul knows no datacenter 'nosuchdc'" in unknown.stderr
    result = run("status", "--addr", "unix:///run/nosock", "--basepath", str(tmp_path))
    assert result.returncode == 3
    assert "cannot reach Consul at unix:///run/nosock" in result.stderr


def test_watch_once_exits_3_promptly_when_consul_is_down(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{closed.getsockname()[1]}"
    result = run("watch", "--once", "--addr", addr, "--basepath", str(tmp_path), timeout=20)
    assert result.returncode == 3, result.stderr
    assert f"cannot reach Consul at http://{addr}" in result.stderr


def test_links_in_the_target_are_skipped_and_named_and_the_rest_applied(
    make_node: Any, kv: KV, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("precious")
    node: Node = make_node("n")
    (node.root / "conf").symlink_to(outside)
    (node.root / "f").symlink_to(outside / "precious")
    kv.txn_set(
        {
            f"{node.prefix}/conf/evil": b"evil",
            f"{node.prefix}/f": b"evil",
            f"{node.prefix}/ok": b"ok",
        }
    )
    result = node.run("pull")
    assert result.exit_code == 5, result.output
    assert "skipped 'conf/evil': conf is a symbolic link or not a directory here" in result.stderr
    assert "skipped 'f': f is a symbolic link, a directory or a device here" in result.stderr
    assert node.read("ok") == b"ok"
    assert (outside / "precious").read_text() == "precious"
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]


def test_a_write_error_after_the_files_were_applied_is_exit_5_naming_the_path(
    make_node: Any, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "x")
    assert a.run("push").exit_code == 0
    records = b.root / ".fileconsul" / "records"
    records.parent.mkdir()
    records.write_text("a file where the records directory goes")
    result = b.run("pull")
    assert result.exit_code == 5, result.output
    assert str(records) in result.stderr
    assert "internal error" not in result.stderr


@pytest.mark.parametrize("spelling", ["--basepath", "-basepath"])
def test_connection_options_work_before_the_command(
    spelling: str, node: Node, agent: Agent
) -> None:
    node.write("f", "x")
    args = [spelling, str(node.root), "--addr", node.addr, "--prefix", node.prefix]
    result = run(*args, "push")
    assert result.returncode == 0, result.stderr
    status = run(*args, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["in_sync"] is True
    # Given in both places, the one after the command's name wins.
    elsewhere = run(*args, "status", "--prefix", f"{node.prefix}-other")
    assert elsewhere.returncode == 1


def test_the_hook_exit_status_is_printed_even_when_it_is_0(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "x")
    assert a.run("push").exit_code == 0
    result = b.run("pull", "--exec", "true")
    assert "hook exited 0: true" in result.stdout
    args = fileconsul_args(b, "status")
    assert subprocess.run(args, capture_output=True, check=False).returncode == 0
