"""Trees that change shape and odd trees, end to end against a real agent: a file that becomes
a directory and back, links in the way, a file and a directory of one name in Consul, special
mode bits, renames under the delete cap, an empty prefix, the put-back copies of --check."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from tests.conftest import KV, Node


def fleet_state(node: Node) -> dict[str, Any]:
    """This node's entry in `status --fleet --json`."""
    result = node.run("status", "--fleet", "--json")
    (entry,) = json.loads(result.stdout)["nodes"]
    found: dict[str, Any] = entry
    return found


def test_a_file_that_becomes_a_directory_takes_one_pull_and_one_hook_run(
    make_node: Any, tmp_path: Path
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("x", "a file\n")
    a.write("keep", "k\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    (a.root / "x").unlink()
    a.write("x/y", "inner\n")
    assert a.run("push").exit_code == 0
    runs = tmp_path / "runs"
    result = b.run("pull", "--exec", f"ls x >> {runs}")
    assert result.exit_code == 0, result.output
    assert b.files() == {"keep": b"k\n", "x/y": b"inner\n"}
    assert runs.read_text() == "y\n"  # one run, on the tree the revision has
    assert b.run("status").exit_code == 0


def test_a_directory_that_becomes_a_file_takes_one_pull_and_is_put_back_whole_on_rejection(
    make_node: Any,
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("x/y", "inner\n")
    a.write("x/z/deep", "deep\n")
    for i in range(3):  # the two deletes stay under the cap
        a.write(f"other{i}", f"{i}\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    (a.root / "x" / "y").unlink()
    (a.root / "x" / "z" / "deep").unlink()
    (a.root / "x" / "z").rmdir()
    (a.root / "x").rmdir()
    a.write("x", "a file now\n", mode=0o755)
    assert a.run("push").exit_code == 0
    others = {f"other{i}": f"{i}\n".encode() for i in range(3)}
    rejected = b.run("pull", "--check", "test -f x && exit 3")
    assert rejected.exit_code == 8, rejected.output
    assert b.files() == {"x/y": b"inner\n", "x/z/deep": b"deep\n", **others}
    result = b.run("pull")
    assert result.exit_code == 0, result.output
    assert b.files() == {"x": b"a file now\n", **others}
    assert stat.S_IMODE((b.root / "x").stat().st_mode) == 0o755


def test_a_directory_holding_a_file_fileconsul_does_not_manage_is_not_replaced(
    make_node: Any,
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("x/y", "inner\n")
    a.write("other", "o\n")
    a.write("more", "m\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    b.write(".fileconsulignore", "x/local\n")
    b.write("x/local", "this node's own\n")
    (a.root / "x" / "y").unlink()
    (a.root / "x").rmdir()
    a.write("x", "a file\n")
    assert a.run("push").exit_code == 0
    result = b.run("pull")
    assert result.exit_code == 5
    assert "skipped 'x'" in result.stderr
    assert b.read("x/local") == b"this node's own\n"


def test_a_pull_that_skipped_paths_is_not_reported_current(make_node: Any, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    a, b = make_node("a"), make_node("b")
    a.write("f", "1\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    assert fleet_state(b)["state"] == "current"
    (b.root / "dirlink").symlink_to(elsewhere)
    a.write("dirlink/f", "through the link\n")
    assert a.run("push", "--no-report").exit_code == 0
    result = b.run("pull")
    assert result.exit_code == 5
    assert "Already up-to-date." not in result.stdout
    assert "Applied nothing: 1 path skipped." in result.stdout
    assert list(elsewhere.iterdir()) == []
    entry = fleet_state(b)
    assert entry["state"] == "failed"
    assert entry["result"] == "skipped"
    assert "dirlink/f" in entry["message"]
    assert b.run("status", "--fleet").exit_code == 1


def test_a_file_and_a_directory_of_one_name_in_consul_are_named_and_never_committed(
    make_node: Any, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    for i in range(3):
        a.write(f"other{i}", f"{i}\n")
    a.write("x", "committed file\n")
    assert a.run("push").exit_code == 0
    kv.txn_set({f"{a.prefix}/x/y": b"another tool's\n", f"{a.prefix}/z": b"z\n"})
    status = b.run("status")
    assert status.exit_code == 5
    assert f"key '{a.prefix}/x/y' in Consul: x and x/y are both keys" in status.stdout
    result = b.run("pull")
    assert result.exit_code == 5, result.output
    assert b.files() == {
        "other0": b"0\n",
        "other1": b"1\n",
        "other2": b"2\n",
        "x": b"committed file\n",
        "z": b"z\n",
    }
    a.write("other0", "changed\n")
    assert a.run("push").exit_code == 0
    assert f"{a.prefix}/x/y" not in json.dumps(kv.manifest(a.prefix))
    assert "x/y" not in kv.manifest(a.prefix)["paths"]


def test_setuid_setgid_and_sticky_bits_refuse_the_push_and_show_in_status(
    node: Node, kv: KV
) -> None:
    node.write("plain", "p\n")
    node.write("tool", "#!/bin/sh\n", mode=0o4755)
    status = node.run("status")
    assert status.exit_code == 5
    assert "local file 'tool' has mode 4755" in status.stdout
    result = node.run("push")
    assert result.exit_code == 5
    assert "setuid, setgid or sticky bit: 'tool' (4755)" in result.stderr
    assert kv.files(node.prefix) == {}
    (node.root / "tool").chmod(0o755)
    assert node.run("push").exit_code == 0
    assert kv.manifest(node.prefix)["modes"] == [0o644, 0o755]


def test_a_rename_in_a_one_file_tree_is_pulled_without_lifting_the_cap(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("old-name", "the content\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    (a.root / "old-name").rename(a.root / "new-name")
    assert a.run("push").exit_code == 0
    result = b.run("pull")
    assert result.exit_code == 0, result.output
    assert b.files() == {"new-name": b"the content\n"}


def test_a_pull_from_an_empty_prefix_says_consul_holds_nothing(make_node: Any) -> None:
    node: Node = make_node("new")
    node.root.rmdir()
    result = node.run("pull")
    assert result.exit_code == 0
    assert "Already up-to-date." not in result.stdout
    assert f"Consul holds nothing under {node.prefix}/ yet" in result.stdout


def test_while_a_check_runs_no_copy_of_a_replaced_file_is_in_the_tree(
    make_node: Any, tmp_path: Path
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("conf.d/one.conf", "one\n")
    a.write("conf.d/two.conf", "two\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    a.write("conf.d/one.conf", "one, changed\n")
    (a.root / "conf.d" / "two.conf").unlink()
    assert a.run("push").exit_code == 0
    seen = tmp_path / "seen"
    result = b.run("pull", "--check", f"ls -A conf.d > {seen}")
    assert result.exit_code == 0, result.output
    assert seen.read_text() == "one.conf\n"
    assert os.listdir(b.root / ".fileconsul" / "putback") == []


def test_push_keep_with_nothing_else_to_push_is_committed(node: Node, kv: KV) -> None:
    node.write("f", "1\n")
    assert node.run("push").exit_code == 0
    assert kv.head(node.prefix)["keep"] == 100
    result = node.run("push", "--keep", "5")
    assert result.exit_code == 0, result.output
    assert "committed r2: keep the last 5 revisions." in result.stdout
    assert kv.head(node.prefix)["keep"] == 5
    assert node.run("push", "--keep", "5").stdout.strip() == "Nothing to push."
