"""halt and resume by hand, against a real agent: a watcher held back by a halt applies the
revision as soon as it is resumed, not at its next --wait."""

from __future__ import annotations

import json
import time
from typing import Any

from fileconsul.fleet import rollout
from tests.cli.test_cli import MASTER, acl_agent, make_token, pusher_rules
from tests.conftest import KV, library_run
from tests.consul_agent import Agent
from tests.processes import background, fileconsul_args, wait_until

__all__ = ["acl_agent"]  # the fixture, shared with the ACL tests of the command line


def test_halt_holds_a_watcher_back_and_resume_lets_it_apply_at_once(make_node: Any, kv: KV) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("conf", "one\n")
    assert a.run("push", "--no-report").exit_code == 0
    a.write("conf", "two\n")
    assert a.run("push", "--no-report").exit_code == 0
    halted = a.run("halt", "-m", "hold <it>", "--node", "ops")
    assert halted.exit_code == 0, halted.output
    assert "halted the rollout of r2: hold <it>." in halted.stdout
    key = f"{a.prefix}.fileconsul/halt"
    written = kv.meta(a.prefix)[key]
    assert json.loads(written["value"])["node"] == "ops"
    again = a.run("halt", "-m", "another reason")
    assert again.exit_code == 0
    assert "Revision 2 is HALTED: ops stopped it" in again.stdout
    assert kv.meta(a.prefix)[key]["index"] == written["index"]  # the first halt stands
    # A watcher that checks keeps out of a halted revision, and waits (--wait is long).
    args = fileconsul_args(b, "watch", "--check", "true", "--node", "b", "--wait", "300")
    with background(args) as watcher:
        wait_until(lambda: "held:" in watcher.output(), 30, "the watcher to hold back")
        assert b.files() == {}
        fleet = json.loads(a.run("status", "--fleet", "--json").stdout)
        assert fleet["halt"]["reason"] == "hold <it>"
        assert [(n["node"], n["state"]) for n in fleet["nodes"]] == [("b", "halted")]
        time.sleep(0.5)  # the watcher blocks on the head and the halt
        started = time.monotonic()
        resumed = a.run("resume")
        assert resumed.exit_code == 0, resumed.output
        assert "lifted the halt of r2 (ops: hold <it>)" in resumed.stdout
        wait_until(lambda: b.files() == {"conf": b"two\n"}, 10, "the resumed apply")
        assert time.monotonic() - started < 5
    assert key not in kv.meta(a.prefix)
    assert a.run("resume").stdout == "Nothing is halted.\n"
    fleet = json.loads(a.run("status", "--fleet", "--json").stdout)
    assert fleet["halt"] is None
    assert [(n["node"], n["state"]) for n in fleet["nodes"]] == [("b", "current")]


def test_halt_names_who_halted_by_default_and_refuses_a_tree_without_revisions(
    make_node: Any, kv: KV
) -> None:
    a = make_node("a")
    empty = a.run("halt")
    assert empty.exit_code == 5
    assert "has no revision yet: there is no rollout to halt" in empty.stderr
    assert kv.meta(a.prefix) == {}
    a.write("f", "1")
    assert a.run("push", "--no-report").exit_code == 0
    assert a.run("halt", "--node", "ops", env={"USER": "alice"}).exit_code == 0
    halt = json.loads(kv.meta(a.prefix)[f"{a.prefix}.fileconsul/halt"]["value"])
    assert (halt["revision"], halt["node"], halt["reason"]) == (1, "ops", "halted by alice")
    # A newer revision lifts it; resume then only deletes the stale key.
    a.write("f", "2")
    assert a.run("push", "--no-report").exit_code == 0
    assert "which a newer revision had lifted" in a.run("resume").stdout


def test_halting_needs_a_token_that_may_write_the_halt_key(
    acl_agent: Agent, make_node: Any, prefix: str
) -> None:
    writer = make_token(acl_agent, pusher_rules(prefix))
    reader = make_token(acl_agent, f'key_prefix "{prefix}" {{ policy = "read" }}')
    halter = make_token(
        acl_agent,
        f'key_prefix "{prefix}" {{ policy = "read" }}\n'
        f'key "{prefix}.fileconsul/halt" {{ policy = "write" }}',
    )
    a = make_node("a", addr=acl_agent.addr, token=writer)
    a.write("f", "1")
    assert a.run("push", "--no-report").exit_code == 0
    kv = KV(acl_agent.url, MASTER)
    before = kv.meta(prefix)
    read_only = make_node("r", addr=acl_agent.addr, token=reader)
    for command in (["halt"], ["ui", "--allow-actions", "--listen", "127.0.0.1:0"]):
        result = read_only.run(*command)
        assert result.exit_code == 6, (command, result.output)
        assert reader not in result.output
    assert "--allow-actions: this token may not write" in result.stderr
    assert kv.meta(prefix) == before
    # The probe writes nothing, for a token that may and one that may not.
    may_halt = make_node("h", addr=acl_agent.addr, token=halter)
    for asking, may in ((may_halt, True), (read_only, False)):
        with library_run(asking).client as client:
            assert rollout.can_halt(client, prefix) is may
    assert kv.meta(prefix) == before
    assert make_node("h2", addr=acl_agent.addr, token=halter).run("halt").exit_code == 0
    assert f"{prefix}.fileconsul/halt" in kv.meta(prefix)
