"""The dashboard in a real headless Chromium, against a real agent and real watchers: it lists
the fleet, follows pushes without a reload, shows a rejection and its halt, resumes from the
page only when actions are allowed, refuses forged writes, renders hostile text as text, and
shows drift."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.browser import chromium, dashboard, poll, screenshot
from tests.conftest import KV, Node
from tests.processes import background, fileconsul_args, wait_until

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


def rows(driver: webdriver.Chrome) -> list[tuple[str, str, str]]:
    found: list[list[str]] = driver.execute_script(
        "return [...document.querySelectorAll('#nodes .rows .row')].map(row =>"
        " [row.dataset.node, row.dataset.state, row.querySelector('.revision').textContent])"
    )
    return [(node, state, revision) for node, state, revision in found]


def text_of(driver: webdriver.Chrome, selector: str) -> str:
    found: str = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e && !e.closest('[hidden]')"
        " ? e.textContent : '';",
        selector,
    )
    return found


def watchers(stack: ExitStack, nodes: list[Node], *extra: str) -> None:
    for node in nodes:
        args = fileconsul_args(node, "watch", "--node", node.root.name, *extra)
        stack.enter_context(background(args))


def fleet_states(a: Node) -> dict[str, str]:
    fleet = json.loads(a.run("status", "--fleet", "--json").stdout)
    return {n["node"]: n["state"] for n in fleet["nodes"]}


def test_the_page_lists_three_watchers_and_follows_a_push_without_a_reload(
    make_node: Any, browser: webdriver.Chrome
) -> None:
    a = make_node("a")
    nodes = [make_node(f"w{i}") for i in range(3)]
    a.write("app.conf", "port = 80\n")
    assert a.run("push", "--no-report", "-m", "first").exit_code == 0
    with ExitStack() as stack:
        watchers(stack, nodes)
        wait_until(lambda: len(fleet_states(a)) == 3, 30, "three reports")
        url, _ = stack.enter_context(dashboard(a))
        browser.get(url)
        three = [("w0", "current", "r1"), ("w1", "current", "r1"), ("w2", "current", "r1")]
        poll(lambda: rows(browser) == three, 10, "three current watchers on the page")
        assert text_of(browser, "#head .rev") == "r1"
        assert text_of(browser, "#live") == "live"
        browser.execute_script("window.__same_page = true;")
        a.write("app.conf", "port = 8080\n")
        pushed = time.monotonic()
        assert a.run("push", "--no-report", "-m", "raise the port").exit_code == 0
        moved = [("w0", "current", "r2"), ("w1", "current", "r2"), ("w2", "current", "r2")]
        poll(lambda: text_of(browser, "#head .rev") == "r2" and rows(browser) == moved, 5, "r2")
        assert time.monotonic() - pushed < 2.0
        assert browser.execute_script("return window.__same_page === true;")
        assert text_of(browser, "#head .message") == "raise the port"
        # A revision's changes and its diff, as show --patch prints it.
        browser.get(url + "/#r2")
        poll(lambda: "+port = 8080" in text_of(browser, "#revision-patch"), 10, "the diff")
        shown = text_of(browser, "#revision-patch")
        assert (shown == a.run("show", "2", "--patch", "--json").stdout and False) or shown
        assert shown == json.loads(a.run("show", "2", "--patch", "--json").stdout)["patch"]
        assert text_of(browser, "#revision-changes") == "modifiedapp.conf"
        screenshot(browser, "dashboard-live.png")


def test_a_rejection_shows_with_its_halt_and_resume_from_the_page_lets_the_rollout_go_on(
    make_node: Any, kv: KV, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    a = make_node("a")
    nodes = [make_node(f"w{i}") for i in range(3)]
    a.write("conf", "good\n")
    assert a.run("push", "--no-report").exit_code == 0
    first = tmp_path / "first-check"
    # The first node to check a BAD conf rejects it; every later check passes.
    check = f"if grep -q BAD conf && mkdir {first} 2>/dev/null; then echo 'conf is BAD'; exit 1; fi"
    with ExitStack() as stack:
        watchers(stack, nodes, "--check", check, "--max-parallel", "1")
        wait_until(lambda: fleet_states(a) == dict.fromkeys(["w0", "w1", "w2"], "current"), 30)
        url, _ = stack.enter_context(dashboard(a, "--allow-actions"))
        browser.get(url)
        poll(lambda: len(rows(browser)) == 3, 10, "the nodes")
        a.write("conf", "BAD\n")
        assert a.run("push", "--no-report", "-m", "a bad change").exit_code == 0
        poll(lambda: text_of(browser, "#halt-title") == "Revision 2 is HALTED", 30, "the halt")
        poll(
            lambda: sorted(s for _, s, _ in rows(browser)) == ["halted", "halted", "rejected"],
            30,
            "one rejected and two halted",
        )
        (rejected,) = [n for n, s, _ in rows(browser) if s == "rejected"]
        assert "--check exited 1: conf is BAD" in text_of(browser, "#halt-text")
        assert text_of(browser, f'.row[data-node="{rejected}"] .detail').endswith("conf is BAD")
        browser.find_element(By.CSS_SELECTOR, '#log li[data-revision="2"]').click()
        poll(lambda: "+BAD" in text_of(browser, "#revision-patch"), 10, "r2's diff")
        screenshot(browser, "dashboard-halted.png")
        browser.find_element(By.ID, "resume").click()
        poll(lambda: text_of(browser, "#halt-title") == "", 10, "the halt to lift")
        assert "lifted the halt of r2" in text_of(browser, "#action-result")
        poll(
            lambda: (
                sorted(rows(browser))
                == sorted(
                    [(n, "current", "r2") for n in ("w0", "w1", "w2") if n != rejected]
                    + [(rejected, "rejected", "r2")]
                )
            ),
            30,
            "the rollout to go on",
        )
        assert f"{a.prefix}.fileconsul/halt" not in kv.meta(a.prefix)
        for node in nodes:
            assert node.files() == (
                {"conf": b"good\n"} if node.root.name == rejected else {"conf": b"BAD\n"}
            )
        screenshot(browser, "dashboard-resumed.png")


def test_a_page_without_actions_has_no_button_and_refuses_every_write(
    make_node: Any, kv: KV, browser: webdriver.Chrome
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("conf", "1\n")
    assert a.run("push").exit_code == 0
    assert a.run("halt", "-m", "held").exit_code == 0
    halt = f"{a.prefix}.fileconsul/halt"
    before = kv.meta(a.prefix)[halt]
    with dashboard(a) as (url, _):
        browser.get(url)
        poll(lambda: text_of(browser, "#halt-title") == "Revision 1 is HALTED", 10, "the halt")
        controls = browser.execute_script(
            "return document.querySelectorAll("
            "'button, form, input, [name=fileconsul-action-token]').length"
        )
        assert controls == 0
        # A forged POST from the page itself, and from outside with every header right.
        answer = browser.execute_script(
            "return fetch('/api/resume', {method: 'POST', headers: {'Content-Type': "
            "'application/json', 'X-Fileconsul-Action-Token': 'guess'}, body: '{}'})"
            ".then(r => r.status)"
        )
        assert answer == 403
        host = url.removeprefix("http://")
        forged = httpx.post(
            url + "/api/resume",
            json={},
            headers={"Origin": url, "Host": host, "X-Fileconsul-Action-Token": "guess"},
        )
        assert forged.status_code == 403
        assert "started without --allow-actions" in forged.json()["error"]
    with dashboard(a, "--allow-actions") as (url, _):
        host = url.removeprefix("http://")
        page = httpx.get(url).text
        token = page.split('name="fileconsul-action-token" content="')[1].split('"')[0]
        right = {"Origin": url, "X-Fileconsul-Action-Token": token}
        refusals = [
            ({**right, "X-Fileconsul-Action-Token": "wrong"}, "application/json", 403),
            ({**right, "Origin": "http://evil.example"}, "application/json", 403),
            ({"X-Fileconsul-Action-Token": token}, "application/json", 403),
            (right, "text/plain", 403),  # what a cross-site form can send
            ({**right, "Host": "evil.example:80"}, "application/json", 421),  # a rebound name
        ]
        for headers, kind, status in refusals:
            sent = httpx.post(
                url + "/api/resume", content=b"{}", headers={**headers, "Content-Type": kind}
            )
            assert sent.status_code == status, (headers, kind, sent.text)
        assert kv.meta(a.prefix)[halt] == before
        assert httpx.get(url + "/", headers={"Host": "evil.example"}).status_code == 421
        assert httpx.post(url + "/api/resume", json={}, headers=right).status_code == 200
    assert halt not in kv.meta(a.prefix)
    assert b.files() == {}


def test_hostile_paths_messages_and_node_names_render_as_text_and_run_no_script(
    make_node: Any, browser: webdriver.Chrome
) -> None:
    a = make_node("a")
    a.write(HOSTILE, "x\n")
    a.write("conf", f"{HOSTILE}\n")
    assert a.run("push", "-m", HOSTILE, "--node", HOSTILE).exit_code == 0
    with dashboard(a) as (url, _):
        browser.get(url + "/#r1")
        poll(lambda: HOSTILE in text_of(browser, "#revision-patch"), 10, "the revision")
        assert text_of(browser, "#head .message") == HOSTILE
        assert rows(browser) == [(HOSTILE, "current", "r1")]
        assert HOSTILE in text_of(browser, "#revision-changes")
        assert text_of(browser, "#log .msg") == HOSTILE
        assert browser.execute_script("return document.title") == f"fileconsul {a.prefix}"
        assert browser.execute_script("return document.querySelectorAll('img').length") == 0
        assert browser.execute_script("return window.__dialogs") == []
        assert browser.execute_script("return window.__violations") == []


def test_a_hand_edit_on_a_watched_node_shows_as_drifted_on_the_page(
    make_node: Any, browser: webdriver.Chrome
) -> None:
    a, b = make_node("a"), make_node("b")
    a.write("app.conf", "port = 80\n")
    assert a.run("push", "--no-report").exit_code == 0
    with ExitStack() as stack:
        watchers(stack, [b], "--drift-scan", "0.5")
        wait_until(lambda: b.files() == {"app.conf": b"port = 80\n"})
        url, _ = stack.enter_context(dashboard(a))
        browser.get(url)
        poll(lambda: rows(browser) == [("b", "current", "r1")], 10, "the node")
        b.write("app.conf", "port = 9999\n")
        took = poll(lambda: rows(browser) == [("b", "drifted", "r1")], 5, "drifted on the page")
        assert took < 5
        assert text_of(browser, '.row[data-node="b"] .detail') == "changed here by hand: app.conf"
        assert text_of(browser, '.chip[data-state="drifted"]') == "drifted 1"
