"""A delivery looks only at the paths it changes, against a real agent: a local edit of such a
path is still a conflict, one elsewhere is left alone and pushed later, an edit made while
the watcher was stopped is found at its start, and one no event could show (a second hard
link, an mtime put back) by the next scan."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.conftest import Node
from tests.processes import background, fileconsul_args, wait_until


def drifted(a: Node, name: str) -> list[str]:
    fleet = json.loads(a.run("status", "--fleet", "--json").stdout)
    found = [n for n in fleet["nodes"] if n["node"] == name]
    return list(found[0].get("drifted") or []) if found else []


def test_a_local_edit_elsewhere_is_left_alone_by_watch_and_pushed_later(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    for i in range(20):
        a.write(f"d{i % 4}/f{i:02}", f"{i}\n")
    assert a.run("push").exit_code == 0
    with background(fileconsul_args(b, "watch", "--no-report", "--drift-scan", "0")):
        wait_until(lambda: (b.root / "d3/f19").exists(), what="the first apply")
        b.write("d1/f01", "edited on b\n")
        a.write("d0/f00", "pushed from a\n")
        assert a.run("push").exit_code == 0
        wait_until(lambda: b.read("d0/f00") == b"pushed from a\n", what="the push")
        assert b.read("d1/f01") == b"edited on b\n"
    status = b.run("status")
    assert status.exit_code == 1
    assert "modified:   d1/f01" in status.stdout
    assert b.run("push").exit_code == 0
    assert a.run("pull").exit_code == 0
    assert a.read("d1/f01") == b"edited on b\n"


def test_an_edit_made_while_the_watcher_was_stopped_is_found_at_its_start(
    make_node: Any,
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("conf", "1\n")
    a.write("other", "o\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull", "--node", "b-node").exit_code == 0
    b.write("other", "edited while nothing watched\n")
    args = fileconsul_args(b, "watch", "--node", "b-node", "--drift-scan", "60")
    with background(args):
        wait_until(lambda: drifted(a, "b-node") == ["other"], 10, "the start-up scan")
        a.write("conf", "2\n")
        assert a.run("push").exit_code == 0
        wait_until(lambda: b.read("conf") == b"2\n", what="the next push")
    assert b.read("other") == b"edited while nothing watched\n"


def test_edits_no_file_event_could_show_are_found_by_the_periodic_scan(
    make_node: Any, tmp_path: Path
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("linked", "one\n")
    a.write("stamped", "same size\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull", "--node", "b-node").exit_code == 0
    second = tmp_path / "outside-the-tree"
    os.link(b.root / "linked", second)
    args = fileconsul_args(b, "watch", "--node", "b-node", "--drift-scan", "1")
    with background(args):
        wait_until(lambda: drifted(a, "b-node") == [], 10, "the start-up scan")
        second.write_bytes(b"two\n")  # through the other name: the tree's directory sees nothing
        stamped = b.root / "stamped"
        before = stamped.stat()
        stamped.write_bytes(b"SAME SIZE\n")
        os.utime(stamped, ns=(before.st_atime_ns, before.st_mtime_ns))  # the mtime put back
        wait_until(lambda: drifted(a, "b-node") == ["linked", "stamped"], 10, "the next scan")
