"""Signed revisions against a real agent: keygen, a signed push, a verifying pull from
nothing and one revision behind, and the refusals (exit 11), each changing nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KV, Node


@pytest.fixture
def keys(tmp_path: Path, node: Node) -> dict[str, Path]:
    made = {}
    for name in ("release", "other"):
        path = tmp_path / "keys" / name
        path.parent.mkdir(exist_ok=True)
        result = node.run("keygen", str(path), "--comment", name)
        assert result.exit_code == 0, result.output
        made[name] = path
    return made


def test_a_signed_push_is_pulled_from_nothing_and_then_by_the_change(
    make_node: Any, keys: dict[str, Path], kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    sign = ["--sign-key", str(keys["release"])]
    trust = ["--trusted-keys", f"{keys['release']}.pub"]
    a.write("conf/app.json", '{"v": 1}')
    a.write("bin/run", "#!/bin/sh\n", 0o755)
    result = a.run("push", *sign)
    assert result.exit_code == 0, result.output
    head = kv.head(a.prefix)
    assert head["signature"]["key"]
    assert head["seal"]["parent"] is None
    result = b.run("pull", *trust)
    assert result.exit_code == 0, result.output
    assert b.files() == a.files()
    a.write("conf/app.json", '{"v": 2}')
    assert a.run("push", *sign).exit_code == 0
    result = b.run("pull", *trust, "-v")
    assert result.exit_code == 0, result.output
    assert b.read("conf/app.json") == b'{"v": 2}'
    record = json.loads((b.root / ".fileconsul/records" / f"{b.prefix}.json").read_text())
    assert record["remote"]["sealed"]["id"]


def test_an_unsigned_push_is_refused_by_a_verifying_pull_and_changes_nothing(
    make_node: Any, keys: dict[str, Path]
) -> None:
    a, b, c = make_node("a"), make_node("b"), make_node("c")
    sign = ["--sign-key", str(keys["release"])]
    trust = ["--trusted-keys", f"{keys['release']}.pub"]
    a.write("f", "signed")
    assert a.run("push", *sign).exit_code == 0
    assert b.run("pull", *trust).exit_code == 0
    assert c.run("pull").exit_code == 0
    c.write("f", "unsigned")
    assert c.run("push").exit_code == 0
    result = b.run("pull", *trust)
    assert result.exit_code == 11, result.output
    assert "not signed" in result.output
    assert b.read("f") == b"signed"
    # The key holder's next push builds on the signed revision and puts f back.
    a.write("g", "next")
    result = a.run("push", *sign)
    assert result.exit_code == 0, result.output
    result = b.run("pull", *trust)
    assert result.exit_code == 0, result.output
    assert b.files() == {"f": b"signed", "g": b"next"}
