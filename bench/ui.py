"""The dashboard at fleet scale: N fleet reports planted in KV beside a real history, then
`fileconsul ui` timed from outside, each figure beside a floor measured in the same run.

- **Page.** A fresh load in headless Chromium until every node's row is on the page and
  drawn (the page's own mark: `performance.now()` once the frame after its first render was
  produced, style and layout included), beside the floor: the same rows as a plain
  server-rendered HTML table, loaded in the same browser until the same mark.
- **JSON.** `GET /api/state` wall time, beside Consul's own `?recurse` of the reports (the
  data the snapshot is made of).
- **Update.** From one report written to KV to its row changing on the open page.
"""

from __future__ import annotations

import html
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import chromium  # noqa: E402
from tests.consul_agent import free_port  # noqa: E402


def _report(i: int, revision: int) -> dict[str, Any]:
    """A plausible fleet: most nodes current, some lagging, drifted or rejected."""
    report: dict[str, Any] = {
        "node": f"node-{i:05d}",
        "revision": revision,
        "time": round(time.time() - i % 600, 3),
        "result": "ok",
        "message": "",
        "applied": 1,
        "hook": "systemctl reload app",
        "hook_exit": 0,
        "check_exit": None,
        "output": "",
        "drifted": [],
        "drift_count": 0,
    }
    if i % 50 == 1:
        report["revision"] = revision - 1
    elif i % 97 == 2:
        report |= {"drifted": ["conf/app.conf"], "drift_count": 1}
    elif i % 211 == 3:
        report |= {"result": "rejected", "check_exit": 1, "output": "nginx: [emerg] bad line"}
    return report


def plant(http: httpx.Client, prefix: str, count: int, revision: int) -> None:
    import base64

    ops = []
    for i in range(count):
        value = json.dumps(_report(i, revision), separators=(",", ":")).encode()
        key = f"{prefix}.fileconsul/nodes/node-{i:05d}"
        ops.append({"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(value).decode()}})
    for start in range(0, len(ops), 64):
        http.put("/v1/txn", json=ops[start : start + 64]).raise_for_status()


def floor_page(path: Path, count: int, revision: int) -> None:
    """The rows the dashboard shows, as a static table: what the browser alone costs."""
    rows = []
    for i in range(count):
        r = _report(i, revision)
        cells = [r["node"], r["result"], f"r{r['revision']}", revision - r["revision"], r["time"]]
        cells.append(r["output"] or ", ".join(r["drifted"]))
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    body = "<table><tbody>" + "".join(rows) + "</tbody></table>"
    head = "<!doctype html><html><head><meta charset=utf-8></head>"
    mark = (
        "<script>requestAnimationFrame(() => setTimeout(() => document.documentElement"
        ".dataset.firstDrawn = performance.now().toFixed(1), 0));</script>"
    )
    path.write_text(f"{head}<body>{body}{mark}</body></html>")


def measure(agent_addr: str, python: str, counts: list[int], runs: int) -> list[dict[str, Any]]:
    from fileconsul import config
    from fileconsul.commands import push
    from fileconsul.commands.context import Context
    from fileconsul.store.client import ConsulClient

    http = httpx.Client(base_url=f"http://{agent_addr}", timeout=60)
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    rows = []
    try:
        with chromium() as driver:
            for count in counts:
                prefix = f"benchui{count}"
                src = work / prefix
                (src / "conf").mkdir(parents=True)
                settings = config.settings(addr=agent_addr, prefix=prefix, basepath=src, env={})
                run = Context(settings, ConsulClient(settings.consul))
                for i in range(3):
                    (src / "conf" / "app.conf").write_text(f"workers = {i}\n")
                    push.push(run)
                run.client.close()
                plant(http, prefix, count, 3)
                row = _one(driver, http, agent_addr, python, prefix, count, runs)
                floor = work / f"floor{count}.html"
                floor_page(floor, count, 3)
                floors = [_drawn(driver, floor.as_uri(), count) for _ in range(runs)]
                row["floor_page_seconds"] = round(statistics.median(floors), 3)
                row["page / floor page"] = round(row["page_seconds"] / statistics.median(floors), 2)
                rows.append(row)
                http.delete(f"/v1/kv/{prefix}", params={"recurse": ""})
    finally:
        http.close()
    return rows


def _one(
    driver: Any, http: httpx.Client, agent: str, python: str, prefix: str, count: int, runs: int
) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [python, "-m", "fileconsul", "ui", "--addr", agent, "--prefix", prefix]
    server = subprocess.Popen([*args, "--listen", f"127.0.0.1:{port}", "-q"])
    try:
        _wait(lambda: _answers(url), 30)
        with httpx.Client(base_url=url, timeout=30) as client:
            _wait(lambda: len(client.get("/api/state").json()["fleet"]["nodes"]) == count, 30)
            served = _times(lambda: client.get("/api/state"), max(runs, 5) * 4)
            size = len(client.get("/api/state").content)
        reports = f"/v1/kv/{prefix}.fileconsul/nodes/"
        recursed = _times(lambda: http.get(reports, params={"recurse": ""}), max(runs, 5) * 4)
        pages = [_drawn(driver, url, count) for _ in range(runs)]
        update = _update(driver, http, prefix)
    finally:
        server.terminate()
        server.wait(timeout=30)
    page, json_s, recurse_s = map(statistics.median, (pages, served, recursed))
    return {
        "nodes": count,
        "page_seconds": round(page, 3),
        "json_seconds": round(json_s, 4),
        "json_p95_seconds": round(sorted(served)[int(0.95 * (len(served) - 1))], 4),
        "json_bytes": size,
        "floor_recurse_seconds": round(recurse_s, 4),
        "json / floor recurse": round(json_s / recurse_s, 2),
        "update_seconds": round(update, 3),
    }


def _times(request: Callable[[], httpx.Response], count: int) -> list[float]:
    found = []
    for _ in range(count):
        started = time.perf_counter()
        request().raise_for_status()
        found.append(time.perf_counter() - started)
    return found


def _drawn(driver: Any, url: str, count: int) -> float:
    """A fresh load of `url`: seconds from navigation to the frame with `count` rows drawn
    (the page's own mark; the floor's script sets the same)."""
    driver.get("about:blank")
    driver.get(url)
    mark = "return document.documentElement.dataset.firstDrawn"
    _wait(lambda: driver.execute_script(mark) is not None, 60)
    rows = driver.execute_script("return document.querySelectorAll('.rows .row, tr').length")
    assert rows == count, (rows, count)
    return float(driver.execute_script(mark)) / 1000


def _update(driver: Any, http: httpx.Client, prefix: str) -> float:
    """One report lands: the seconds until its row on the open page says so."""
    import base64

    value = json.dumps({**_report(0, 3), "result": "error", "message": "disk full"}).encode()
    key = f"{prefix}.fileconsul/nodes/node-00000"
    op = {"KV": {"Verb": "set", "Key": key, "Value": base64.b64encode(value).decode()}}
    started = time.perf_counter()
    http.put("/v1/txn", json=[op]).raise_for_status()
    _wait(
        lambda: (
            driver.execute_script(
                "const r = document.querySelector('.row[data-node=\"node-00000\"]');"
                "return r && r.dataset.state;"
            )
            == "failed"
        ),
        30,
        poll=0.005,
    )
    return time.perf_counter() - started


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/api/state", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(predicate: Any, timeout: float, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s")
        time.sleep(poll)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["\ndashboard (fileconsul ui), medians"]
    lines.append(
        f"  {'nodes':>6} {'page s':>8} {'floor s':>8} {'ratio':>6} {'JSON ms':>8} "
        f"{'recurse ms':>10} {'ratio':>6} {'JSON KiB':>9} {'update ms':>9}"
    )
    for r in rows:
        lines.append(
            f"  {r['nodes']:>6} {r['page_seconds']:>8.3f} {r['floor_page_seconds']:>8.3f} "
            f"{r['page / floor page']:>6} {1000 * r['json_seconds']:>8.1f} "
            f"{1000 * r['floor_recurse_seconds']:>10.1f} {r['json / floor recurse']:>6} "
            f"{r['json_bytes'] // 1024:>9} {1000 * r['update_seconds']:>9.0f}"
        )
    return "\n".join(lines)
