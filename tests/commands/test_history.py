"""Revisions against a real agent: log, show, diff, rollback, the bounded history, and the
upgrade from the first format."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import zlib
from pathlib import Path
from typing import Any

import xxhash

from tests.conftest import KV, Node
from tests.processes import background, fileconsul_args, wait_until, with_fault

Tree = dict[str, tuple[bytes, int]]


def tree_of(node: Node) -> Tree:
    """Every file's bytes and permission bits."""
    return {
        rel: (data, stat.S_IMODE((node.root / rel).stat().st_mode))
        for rel, data in node.files().items()
    }


def revision_of(node: Node, number: int) -> None:
    """A push that changes content, a mode, adds and deletes, so each revision differs."""
    node.write("conf/app.conf", f"version = {number}\n")
    node.write("bin/run", f"#!/bin/sh\necho {number}\n", 0o755 if number % 2 else 0o644)
    node.write(f"by-rev/{number}", os.urandom(64))
    old = node.root / f"by-rev/{number - 2}"
    if old.exists():
        old.unlink()


def wait_for_tree(node: Node, expected: Tree, what: str) -> None:
    wait_until(lambda: tree_of(node) == expected, what=what)


def test_rollback_to_three_revisions_reaches_a_watching_node_bytes_and_modes(
    make_node: Any,
) -> None:
    a, b = make_node("a"), make_node("b")
    trees: dict[int, Tree] = {}
    for number in range(1, 11):
        revision_of(a, number)
        result = a.run("push", "-m", f"revision {number}")
        assert result.exit_code == 0, result.output
        assert f"committed r{number}: " in result.stdout
        trees[number] = tree_of(a)
    with background(fileconsul_args(b, "watch", "--no-report")):
        wait_until(lambda: tree_of(b) == trees[10], what="the watcher to hold r10")
        for target, committed in ((3, 11), (7, 12), (5, 13)):
            result = a.run("rollback", str(target))
            assert result.exit_code == 0, result.output
            assert f"committed r{committed}: rolled back to r{target}" in result.stdout
            wait_for_tree(b, trees[target], f"the rollback to r{target}")
    log = json.loads(a.run("log", "-n", "3", "--json").stdout)
    assert log["head"] == 13
    assert [r["revision"] for r in log["revisions"]] == [13, 12, 11]
    assert log["revisions"][0]["message"] == "roll back to revision 5"
    # The rollback changed Consul, not the node that ran it.
    assert tree_of(a) == trees[10]


def test_a_rollback_racing_a_push_has_exactly_one_winner(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "one")
    assert a.run("push").exit_code == 0
    a.write("f", "two")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    for round_ in range(4):
        b.write("f", f"pushed in round {round_}")
        rollback = subprocess.Popen(fileconsul_args(a, "rollback", "1"), stderr=subprocess.PIPE)
        push = subprocess.Popen(fileconsul_args(b, "push", "--no-report"), stderr=subprocess.PIPE)
        codes = sorted([rollback.wait(timeout=60), push.wait(timeout=60)])
        for proc in (rollback, push):
            assert proc.stderr is not None
            proc.stderr.close()
        # Either both land one after the other (the push re-planned on the rollback), or one
        # lost its check-and-set with exit 4 and changed nothing.
        assert codes in ([0, 0], [0, 4]), codes
        head = kv.head(a.prefix)
        value = kv.files(a.prefix)["f"]
        assert value in (b"one", f"pushed in round {round_}".encode())
        assert kv.manifest(a.prefix)["hashes"] == xxhash.xxh3_64_hexdigest(value)
        assert head["revision"] == len(json.loads(a.run("log", "--json").stdout)["revisions"])
        assert b.run("pull", "--force").exit_code == 0


def test_a_rollback_past_the_kept_history_is_refused_and_changes_nothing(
    make_node: Any, kv: KV
) -> None:
    a = make_node("a")
    for number in range(1, 6):
        a.write("f", f"{number}\n")
        assert a.run("push", "--keep", "3").exit_code == 0
    before = {**kv.tree(a.prefix), **kv.meta(a.prefix)}
    result = a.run("rollback", "2")
    assert result.exit_code == 5
    assert "revision 2 is no longer kept" in result.stderr
    assert "the oldest revision that can be is 3" in result.stderr
    assert {**kv.tree(a.prefix), **kv.meta(a.prefix)} == before
    assert a.run("rollback", "9").exit_code == 2
    assert a.run("rollback", "3").exit_code == 0
    assert kv.files(a.prefix)["f"] == b"3\n"


def test_the_history_is_bounded_after_150_pushes(make_node: Any, kv: KV) -> None:
    a = make_node("a")
    for i in range(20):
        a.write(f"steady/{i:02}", os.urandom(1000))
    for _ in range(150):
        a.write("changing", os.urandom(1000))
        assert a.run("push", "--no-report").exit_code == 0
    meta = kv.meta(a.prefix)
    logs = sorted(k for k in meta if "/log/" in k)
    kept = {k.rsplit("/", 2)[1] for k in meta if "/blobs/" in k}
    assert len(logs) == 100
    assert logs[0].endswith("/0000000051")
    assert logs[-1].endswith("/0000000150")
    # Contents replaced by revisions 52 to 150 restore revisions 51 to 149: one 1,000-byte
    # value each.
    assert len(kept) == 99
    assert min(kept) == "0000000052"
    assert [k for k in meta if "/manifests/" in k] == [
        f"{a.prefix}.fileconsul/manifests/0000000150"
    ]
    history_bytes = sum(len(e["value"]) for e in meta.values())
    assert history_bytes < 99 * 1000 + 100 * 1000 + 20_000
    assert a.run("rollback", "51").exit_code == 0
    assert a.run("rollback", "50").exit_code == 5


def test_a_node_killed_mid_rollback_never_makes_a_puller_apply_a_partial_tree(
    make_node: Any, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    first = {f"d/f{i:03}": os.urandom(6000) for i in range(200)}
    for rel, data in first.items():
        a.write(rel, data)
    assert a.run("push").exit_code == 0
    second = {rel: os.urandom(6000) for rel in first}
    for rel, data in second.items():
        a.write(rel, data)
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    killed = with_fault(a, "kill:3", "rollback", "1", "--force", "--node", "crashing-node")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    raw = kv.files(a.prefix)
    assert 0 < sum(raw[rel] == first[rel] for rel in first) < len(first)
    assert b.run("pull").exit_code == 0
    assert b.files() == second
    assert a.run("rollback", "1").exit_code == 0
    assert b.run("pull").exit_code == 0
    assert b.files() == first


def test_diff_output_line_by_line(make_node: Any) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("text", "one\ntwo\nthree\n")
    a.write("binary", b"\x00\x01\x02")
    a.write("script", "#!/bin/sh\n", 0o644)
    a.write("gone", "bye\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    a.write("text", "one\n2\nthree")
    a.write("binary", b"\x00\x01\x03")
    (a.root / "script").chmod(0o755)
    (a.root / "gone").unlink()
    a.write("new", "hello\n")
    assert a.run("push", "--max-delete", "1").exit_code == 0
    b.write("text", "mine\n")
    result = b.run("diff")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "diff a/binary b/binary  (pull: modified)",
        "Binary files a/binary and b/binary differ",
        "diff a/gone b/gone  (pull: deleted)",
        "deleted file mode 100644",
        "--- a/gone\t(local)",
        "+++ /dev/null",
        "@@ -1 +0,0 @@",
        "-bye",
        "diff a/new b/new  (pull: added)",
        "new file mode 100644",
        "--- /dev/null",
        "+++ b/new\t(Consul r2)",
        "@@ -0,0 +1 @@",
        "+hello",
        "diff a/script b/script  (pull: mode)",
        "old mode 100644",
        "new mode 100755",
        "diff a/text b/text  (conflict: local modified, remote modified)",
        "--- a/text\t(Consul r2)",
        "+++ b/text\t(local)",
        "@@ -1,3 +1 @@",
        "-one",
        "-2",
        "-three",
        "\\ No newline at end of file",
        "+mine",
    ]
    between = a.run("diff", "r1", "r2", "text")
    assert between.exit_code == 1
    assert between.stdout.splitlines() == [
        "diff a/text b/text  (modified)",
        "--- a/text\t(r1)",
        "+++ b/text\t(r2)",
        "@@ -1,3 +1,3 @@",
        " one",
        "-two",
        "-three",
        "+2",
        "+three",
        "\\ No newline at end of file",
    ]
    assert a.run("diff").exit_code == 0
    assert a.run("diff").stdout == ""
    assert b.run("diff", "./text", "new").stdout.count("\ndiff ") == 1
    patch = json.loads(a.run("show", "2", "--json", "--patch").stdout)
    assert patch["revision"] == 2
    assert {c["path"]: c["change"] for c in patch["changes"]} == {
        "binary": "modified",
        "gone": "deleted",
        "new": "added",
        "script": "mode",
        "text": "modified",
    }
    assert "+2\n" in patch["patch"]


def legacy_manifest(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A manifest of the first format, as fileconsul 0.1 wrote it."""
    paths = sorted(files)
    body = {
        "format": "fileconsul-manifest/1",
        "paths": paths,
        "hashes": "".join(xxhash.xxh3_64_hexdigest(files[p][0]) for p in paths),
        "sizes": [len(files[p][0]) for p in paths],
        "modes": [files[p][1] for p in paths],
    }
    return zlib.compress(json.dumps(body).encode())


def test_a_tree_of_the_first_format_is_read_and_upgraded_by_the_next_push(
    make_node: Any, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    files = {"conf/app.conf": (b"old = 1\n", 0o644), "bin/run": (b"#!/bin/sh\n", 0o755)}
    for rel, (data, _) in files.items():
        kv.txn_set({f"{a.prefix}/{rel}": data}, flags=xxhash.xxh3_64_intdigest(data))
    manifest = legacy_manifest(files)
    kv.txn_set({f"{a.prefix}/.fileconsul/manifest": manifest}, xxhash.xxh3_64_intdigest(manifest))
    # A node that synced with fileconsul 0.1 has a record of the second format.
    for rel, (data, mode) in files.items():
        a.write(rel, data, mode)
    record = {
        "format": 2,
        "prefix": a.prefix,
        "revision": 42,
        "files": {
            "paths": sorted(files),
            "hashes": "".join(xxhash.xxh3_64_hexdigest(files[p][0]) for p in sorted(files)),
            "sizes": [len(files[p][0]) for p in sorted(files)],
            "modes": [files[p][1] for p in sorted(files)],
        },
    }
    records = a.root / ".fileconsul" / "records"
    records.mkdir(parents=True)
    (records / f"{a.prefix}.json").write_text(json.dumps(record))
    assert a.run("status").exit_code == 0
    result = b.run("pull")
    assert result.exit_code == 0, result.output
    assert tree_of(b) == files
    a.write("conf/app.conf", "new = 2\n")
    result = a.run("push", "-m", "the first push of the new format")
    assert result.exit_code == 0, result.output
    assert "committed r1: 1 file" in result.stdout
    assert f"{a.prefix}/.fileconsul/manifest" not in kv.tree(a.prefix)
    assert sorted(kv.files(a.prefix)) == ["bin/run", "conf/app.conf"]
    commit = json.loads(a.run("show", "1", "--json").stdout)
    assert commit["changes"] == [
        {
            "path": "conf/app.conf",
            "change": "modified",
            "old": commit["changes"][0]["old"],
            "new": commit["changes"][0]["new"],
        }
    ]
    assert json.loads((records / f"{a.prefix}.json").read_text())["format"] == 3
    assert b.run("pull").exit_code == 0
    assert b.read("conf/app.conf") == b"new = 2\n"
    assert a.run("rollback", "1").exit_code == 0  # the head's own tree: nothing to change


def test_a_tree_of_a_newer_format_is_refused_clearly(node: Node, kv: KV) -> None:
    node.write("f", "x")
    assert node.run("push").exit_code == 0
    kv.rewrite_head(node.prefix, format="fileconsul/3")
    before = kv.files(node.prefix)
    for command in ("status", "pull", "push"):
        result = node.run(command)
        assert result.exit_code == 5, (command, result.output)
        assert "format fileconsul/3, written by a newer fileconsul" in result.stderr
    assert kv.files(node.prefix) == before


def test_log_and_show_say_who_when_why_and_what(node: Node, monkeypatch: Any) -> None:
    monkeypatch.setenv("USER", "operator-7")
    node.write("a", "1")
    assert node.run("push", "--node", "node-x", "-m", "the first one").exit_code == 0
    node.write("a", "2")
    node.write("b", "3")
    assert node.run("push", "--node", "node-x", "--message", "two\nlines").exit_code == 0
    text = node.run("log").stdout
    assert text.splitlines()[0].startswith("r2  20")
    assert text.splitlines()[0].endswith("  node-x (operator-7)")
    assert "    two\n    lines\n    modified:   a\n    added:      b\n" in text
    shown = json.loads(node.run("show", "1", "--json").stdout)
    assert shown["message"] == "the first one"
    assert shown["user"] == "operator-7"
    assert shown["changes"][0]["new"]["size"] == 1
    assert node.run("show", "3").exit_code == 2
    assert node.run("log").exit_code == 0
    assert Path(node.root / "a").read_text() == "2"


def delete_key(kv: KV, key: str) -> None:
    import httpx

    assert httpx.delete(f"{kv.url}/v1/kv/{key}").json() is True


def test_a_deleted_head_never_makes_a_new_history_undo_the_old_one(make_node: Any, kv: KV) -> None:
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    for i in range(6):
        a.write(f"f{i}", f"first {i}\n")
    assert a.run("push").exit_code == 0
    a.write("f1", "second\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    files = kv.files(a.prefix)
    delete_key(kv, f"{a.prefix}.fileconsul/head")
    for node, command in ((a, "push"), (b, "pull"), (b, "status")):
        result = node.run(command)
        assert result.exit_code == 7, (command, result.output)
        assert "the head of" in result.stderr + result.stdout
        assert "revisions 1 to 2 of its history remain" in result.stderr + result.stdout
    assert kv.files(a.prefix) == files
    assert b.files() == files
    a.write("f2", "third\n")
    result = a.run("push", "--new-history")
    assert result.exit_code == 0, result.output
    head = kv.head(a.prefix)
    assert (head["revision"], head["since"], head["oldest"]) == (3, 3, 3)
    assert kv.files(a.prefix) == {**files, "f2": b"third\n"}
    meta = kv.meta(a.prefix)
    assert not [k for k in meta if "/log/000000000" in k and not k.endswith("3")]
    for node in (b, c):
        assert node.run("pull").exit_code == 0
        assert node.files() == {**files, "f2": b"third\n"}
    log = json.loads(a.run("log", "--json").stdout)
    assert [r["revision"] for r in log["revisions"]] == [3]
    assert a.run("push", "--new-history").exit_code == 2


def test_a_corrupt_or_truncated_record_is_exit_7_naming_it_and_log_lists_the_others(
    node: Node, kv: KV
) -> None:
    for i in range(3):
        node.write("f", f"{i}\n")
        assert node.run("push").exit_code == 0
    key = f"{node.prefix}.fileconsul/log/0000000002"
    kv.txn_set({key: kv.meta(node.prefix)[key]["value"][:20]})
    for args in (("show", "2"), ("diff", "1"), ("rollback", "1"), ("show", "2", "--patch")):
        result = node.run(*args)
        assert result.exit_code == 7, (args, result.output)
        assert key in result.stderr
        assert "internal error" not in result.stderr
    log = node.run("log")
    assert log.exit_code == 7
    assert "r3  " in log.stdout
    assert "r1  " in log.stdout
    assert "r2  (unreadable)" in log.stdout
    assert key in log.stderr


def test_a_corrupt_kept_content_is_said_to_be_corrupt(node: Node, kv: KV) -> None:
    node.write("f", "old\n")
    assert node.run("push").exit_code == 0
    node.write("f", "new\n")
    assert node.run("push").exit_code == 0
    (blob,) = [k for k in kv.meta(node.prefix) if "/blobs/0000000002/" in k]
    kv.txn_set({blob: b"tampered\n"})
    result = node.run("diff", "1", "2")
    assert result.exit_code == 1
    assert "is corrupt in Consul" in result.stdout
    assert "no longer kept" not in result.stdout
    rollback = node.run("rollback", "1")
    assert rollback.exit_code == 7
    assert "corrupt" in rollback.stderr


def test_a_corrupt_head_is_exit_7_and_suggests_nothing_that_loses_data(node: Node, kv: KV) -> None:
    node.write("f", "1\n")
    assert node.run("push").exit_code == 0
    key = f"{node.prefix}.fileconsul/head"
    kv.txn_set({key: b"{not json"}, flags=xxhash.xxh3_64_intdigest(b"{not json"))
    for command in ("status", "pull", "push", "log"):
        result = node.run(command)
        assert result.exit_code == 7, (command, result.output)
        assert "is corrupt" in result.stderr
        assert "remove it" not in result.stderr


def test_diff_refuses_a_revision_above_the_head_either_way(node: Node) -> None:
    for i in range(3):
        node.write("f", f"{i}\n")
        assert node.run("push", "--keep", "2").exit_code == 0
    gone = node.run("diff", "1", "3")
    assert gone.exit_code == 5
    assert "revision 1 is no longer kept, so it cannot be compared" in gone.stderr
    for args in (("200", "2"), ("2", "200"), ("200",)):
        result = node.run("diff", *args)
        assert result.exit_code == 2, (args, result.output)
        assert "there is no revision 200" in result.stderr
        assert "cannot be compared" in result.stderr
        assert result.stdout == ""


def test_diff_paths_are_resolved_into_the_basepath_and_unknown_ones_refused(
    make_node: Any, monkeypatch: Any, tmp_path: Path
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("k", "1\n")
    a.write("sub/s", "1\n")
    assert a.run("push").exit_code == 0
    assert b.run("pull").exit_code == 0
    b.write("k", "changed here\n")
    monkeypatch.chdir(b.root / "sub")
    up = b.run("diff", "../k")
    assert up.exit_code == 1
    assert "a/k\t" in up.stdout
    assert b.run("diff", str(b.root / "k")).exit_code == 1
    assert b.run("diff", "s").exit_code == 0  # sub/s, unchanged
    for path in ("nothing-here", str(tmp_path), "../../elsewhere"):
        result = b.run("diff", path)
        assert result.exit_code == 2, (path, result.output)


def test_a_rollback_to_the_heads_own_tree_commits_nothing(node: Node, kv: KV) -> None:
    node.write("f", "1\n")
    assert node.run("push").exit_code == 0
    node.write("g", "2\n")
    assert node.run("push").exit_code == 0
    assert node.run("rollback", "1").exit_code == 0
    head = kv.head(node.prefix)["revision"]
    dry, real = node.run("rollback", "1", "--dry-run"), node.run("rollback", "1")
    assert dry.exit_code == real.exit_code == 0
    assert dry.stdout == real.stdout
    assert "Nothing to roll back" in real.stdout
    assert kv.head(node.prefix)["revision"] == head
    data = json.loads(node.run("rollback", "1", "--json").stdout)
    assert (data["command"], data["committed"]) == ("rollback", False)


def test_a_corrupt_manifest_keeps_new_nodes_modes_and_the_next_push_writes_it_again(
    make_node: Any, kv: KV
) -> None:
    a = make_node("a")
    a.write("run.sh", "#!/bin/sh\n", mode=0o755)
    a.write("conf", "c\n")
    assert a.run("push").exit_code == 0
    key = f"{a.prefix}.fileconsul/manifests/0000000001"
    kv.txn_set({key: b"\x78\x9c truncated"})
    fresh = make_node("fresh")
    result = fresh.run("pull")
    assert result.exit_code == 0, result.output
    assert "rebuilt" in result.stderr
    assert stat.S_IMODE((fresh.root / "run.sh").stat().st_mode) == 0o755
    push = a.run("push")
    assert push.exit_code == 0, push.output
    assert "write again the manifest of revision 1" in push.stdout
    later = make_node("later")
    result = later.run("pull")
    assert result.exit_code == 0
    assert "corrupt" not in result.stderr
    assert stat.S_IMODE((later.root / "run.sh").stat().st_mode) == 0o755


def test_a_corrupt_manifest_the_records_cannot_rebuild_is_refused_on_a_new_node(
    make_node: Any, kv: KV
) -> None:
    a = make_node("a")
    a.write("run.sh", "#!/bin/sh\n", mode=0o755)
    a.write("conf", "c\n")
    assert a.run("push", "--keep", "1").exit_code == 0
    a.write("conf", "c2\n")
    assert a.run("push").exit_code == 0  # r1's record, the one that set the mode, falls out
    kv.txn_set({f"{a.prefix}.fileconsul/manifests/0000000002": b"\x78\x9c truncated"})
    fresh = make_node("fresh")
    result = fresh.run("pull")
    assert result.exit_code == 7, result.output
    assert "cannot be known on this node" in result.stderr
    assert fresh.files() == {}
