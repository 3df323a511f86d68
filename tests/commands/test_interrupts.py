"""Ctrl-C at the moments that matter, in real processes: a pull finishes or abandons its apply
as a whole, its hooks still get what it applied, and a push finishes or undoes what it sent."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.conftest import KV, Node
from tests.processes import with_fault


def hook(tmp_path: Path) -> tuple[str, Path]:
    """A hook that appends the changes it was handed, one JSON line per run."""
    log = tmp_path / "hook.log"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, sys\n"
        f"with open({str(log)!r}, 'a') as out:\n"
        "    out.write(json.dumps(json.load(sys.stdin)['changes']) + '\\n')\n"
    )
    return f"{sys.executable} {script}", log


def runs(log: Path) -> list[list[dict[str, str]]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def two_versions(make_node: Any, count: int) -> tuple[Node, Node, dict[str, bytes]]:
    """Node b synced at revision 1; Consul at revision 2, which changes every file."""
    a, b = make_node("a"), make_node("b")
    for i in range(count):
        a.write(f"d{i % 4}/f{i:04}", f"first {i}\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    second = {f"d{i % 4}/f{i:04}": f"second {i}\n".encode() for i in range(count)}
    for rel, data in second.items():
        a.write(rel, data)
    assert a.run("push").exit_code == 0
    return a, b, second


def test_ctrl_c_while_a_pull_stages_leaves_the_tree_as_it_was(
    make_node: Any, tmp_path: Path
) -> None:
    _, b, second = two_versions(make_node, 200)
    before = b.files()
    command, log = hook(tmp_path)
    result = with_fault(b, "interrupt-at-stage", "pull", "--exec", command)
    assert result.returncode == 130, result.stderr
    assert "interrupted" in result.stderr
    assert b.files() == before
    assert not [p for p in b.root.rglob("*") if ".fileconsul-tmp-" in p.name]
    assert runs(log) == []
    assert b.run("pull", "--exec", command).exit_code == 0
    assert b.files() == second
    assert len(runs(log)[0]) == 200


def test_ctrl_c_inside_the_pools_submit_never_leaves_a_worker_staging(
    make_node: Any, kv: KV
) -> None:
    # A Ctrl-C landing inside the thread pool's submit, after it started a worker and before
    # it noted it, left a worker that went on staging after the pull had cleaned up.
    a, b, second = two_versions(make_node, 200)
    # A write by another tool: the pull reads every value first, and stages from memory.
    kv.put(f"{a.prefix}/by-hand", b"h\n")
    second["by-hand"] = b"h\n"
    before = b.files()
    result = with_fault(b, "interrupt-in-submit", "pull")
    assert result.returncode == 130, result.stderr
    assert b.files() == before
    assert not [p for p in b.root.rglob("*") if ".fileconsul-tmp-" in p.name]
    assert b.run("pull").exit_code == 0
    assert b.files() == second


def test_ctrl_c_once_renaming_began_finishes_the_pull_and_its_hook_gets_it_later(
    make_node: Any, tmp_path: Path
) -> None:
    _, b, second = two_versions(make_node, 200)
    command, log = hook(tmp_path)
    result = with_fault(b, "interrupt-at-rename", "pull", "--exec", command)
    assert result.returncode == 130, result.stderr
    assert "interrupted once revision 2 was applied; its hooks did not run" in result.stderr
    assert b.files() == second  # every file new: none left old
    assert runs(log) == []
    again = b.run("pull", "--exec", command)
    assert again.exit_code == 0, again.output
    assert "Already up-to-date." in again.stdout
    (handed,) = runs(log)
    assert sorted(c["path"] for c in handed) == sorted(second)
    assert {c["change"] for c in handed} == {"modified"}
    assert b.run("pull", "--exec", command).exit_code == 0
    assert len(runs(log)) == 1  # handed once


def many(node: Node, count: int, tag: str) -> dict[str, bytes]:
    files = {f"d{i % 5}/f{i:04}": f"{tag} {i}\n".encode() * 200 for i in range(count)}
    for rel, data in files.items():
        node.write(rel, data)
    return files


def test_one_ctrl_c_during_a_push_lets_its_commit_finish_and_says_so(node: Node, kv: KV) -> None:
    many(node, 50, "first")
    assert node.run("push").exit_code == 0
    files = many(node, 400, "second")
    result = with_fault(node, "interrupt:2", "push")
    assert result.returncode == 0, result.stderr
    assert "finishing the push (interrupt again to stop it" in result.stderr
    assert "committed r2: 400 files." in result.stdout
    assert kv.files(node.prefix) == files
    assert node.run("status").exit_code == 0


def test_a_second_ctrl_c_stops_the_push_and_undoes_what_it_sent(node: Node, kv: KV) -> None:
    first = many(node, 50, "first")
    assert node.run("push").exit_code == 0
    before = {**kv.tree(node.prefix), **kv.meta(node.prefix)}
    many(node, 400, "second")
    result = with_fault(node, "interrupt-twice:2", "push")
    assert result.returncode == 130, result.stderr
    assert "interrupted" in result.stderr
    assert kv.files(node.prefix) == first
    after = {**kv.tree(node.prefix), **kv.meta(node.prefix)}
    assert {k: v["value"] for k, v in after.items()} == {k: v["value"] for k, v in before.items()}
    assert kv.head(node.prefix)["revision"] == 1
    again = node.run("push")
    assert again.exit_code == 0, again.output
    assert "committed r2" in again.stdout
