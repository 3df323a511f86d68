"""Fleet reports against a real agent: retiring a decommissioned node."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import KV


def test_a_decommissioned_node_is_forgotten_and_the_fleet_is_current_again(
    make_node: Any, kv: KV
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("f", "1\n")
    assert a.run("push", "--node", "pusher").exit_code == 0
    assert b.run("pull", "--node", "old-web-3").exit_code == 0
    a.write("f", "2\n")
    assert a.run("push", "--node", "pusher").exit_code == 0
    assert a.run("status", "--fleet").exit_code == 1  # old-web-3 is lagging, and stays so
    missing = a.run("forget", "old-web-3", "no-such-node")
    assert missing.exit_code == 2
    assert "no fleet report for no-such-node" in missing.stderr
    assert f"{a.prefix}.fileconsul/nodes/old-web-3" in kv.meta(a.prefix)
    result = a.run("forget", "old-web-3")
    assert result.exit_code == 0, result.output
    fleet = a.run("status", "--fleet", "--json")
    assert fleet.exit_code == 0
    assert [n["node"] for n in json.loads(fleet.stdout)["nodes"]] == ["pusher"]
