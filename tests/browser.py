"""A real headless Chromium (Debian's `chromium` and `chromium-driver`), driven through
selenium with the system's chromedriver, for the dashboard's tests and benchmark; and a
`fileconsul ui` run in the background."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.conftest import Node
from tests.consul_agent import STARTED, free_port
from tests.processes import Background, background, fileconsul_args, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]
ROOT = Path(__file__).resolve().parent.parent
#: Where screenshots are kept (CI keeps them as artifacts).
ARTIFACTS = Path(os.environ.get("FILECONSUL_ARTIFACTS", ROOT / ".cache" / "artifacts"))
#: Recorded before any script of the page runs: dialogs opened and CSP violations.
SPY = """
window.__dialogs = [];
for (const name of ["alert", "confirm", "prompt"]) {
  window[name] = (...args) => { window.__dialogs.push([name, String(args[0])]); };
}
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (event) => window.__violations.push(event.violatedDirective + " " + event.blockedURI));
"""


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh profile; its driver's process is the suite's own (the
    leak check ignores it), and the browser stops with it."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    assert not missing, f"{missing} missing: apt-get install -y chromium chromium-driver"
    os.environ["SE_OFFLINE"] = "true"  # never let selenium look for a driver online
    profile = tempfile.mkdtemp(prefix="fileconsul-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    pid = driver.service.process.pid
    STARTED.add(pid)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": SPY})
        yield driver
    finally:
        driver.quit()
        STARTED.discard(pid)
        shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def dashboard(node: Node, *extra: str) -> Iterator[tuple[str, Background]]:
    """`fileconsul ui` for `node`'s prefix on a free loopback port: its URL, once it answers."""
    port = free_port()
    args = fileconsul_args(node, "ui", "--listen", f"127.0.0.1:{port}", *extra)
    url = f"http://127.0.0.1:{port}"
    with background(args) as server:
        wait_until(lambda: _answers(url), 20, "the dashboard")
        yield url, server


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/api/state", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def poll(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for `predicate()`; the seconds it took."""
    started = time.monotonic()
    wait_until(predicate, timeout, what)
    return time.monotonic() - started
