"""The dashboard's HTTP server, on the standard library's `http.server`: a page and its two
static files, the snapshot as JSON and as server-sent events, one revision as JSON, and (only
when started with actions allowed) halt and resume.

Every answer carries a Content-Security-Policy that allows no inline script and nothing from
elsewhere; the page writes untrusted text (paths, messages, node names, hook output: all of
it from KV) as text, never as HTML. A request whose Host is not the server's is refused (a
page elsewhere cannot reach it by rebinding a name to this address). A write needs actions
allowed, an Origin that is the server's own, and the server's action token in a header, which
only its own page knows: a form or script on another site can send neither.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from fileconsul.cli.web import views
from fileconsul.commands.context import Context, current_user
from fileconsul.errors import FileconsulError, UsageError
from fileconsul.fleet import reports, rollout
from fileconsul.fleet.follow import Follower

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
TOKEN_HEADER = "X-Fileconsul-Action-Token"
#: Seconds between two comments on an idle event stream (proxies close silent ones).
KEEPALIVE = 15.0
_STATIC = {"app.js": "text/javascript", "app.css": "text/css", "icon.svg": "image/svg+xml"}
_REVISION = re.compile(r"/api/revisions/([0-9]{1,10})")
_MAX_BODY = 4096
#: HTTP status for each exit code of an error met answering.
_STATUS = {2: 404, 3: 503, 4: 409, 5: 410, 6: 502, 7: 502}


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r}: give HOST:PORT, as 127.0.0.1:8513")
    return host, int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass
class Dashboard:
    """What every request works with."""

    ctx: Context
    follower: Follower
    actions: bool
    #: The node name halts from the page are made as.
    node: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: Host headers accepted (empty: any, for a server bound to every address).
    hosts: frozenset[str] = frozenset()
    page: bytes = b""
    static: dict[str, bytes] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def load(self) -> None:
        folder = resources.files("fileconsul.cli.web") / "static"
        page = (folder / "index.html").read_text(encoding="utf-8")
        meta = f'<meta name="fileconsul-action-token" content="{self.token}">'
        self.page = page.replace("<!-- actions -->", meta if self.actions else "").encode()
        self.static = {name: (folder / name).read_bytes() for name in _STATIC}


def allowed_hosts(host: str, port: int) -> frozenset[str]:
    if host in ("0.0.0.0", "::", ""):
        return frozenset()
    names = {host, f"[{host}]"} if ":" in host else {host}
    if is_loopback(host):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return frozenset(f"{name}:{port}" for name in names)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go in two writes: with Nagle's algorithm the second waits for the
    # client's delayed ACK of the first (40 ms) on a kept-alive connection.
    disable_nagle_algorithm = True
    server_version = "fileconsul-ui"
    sys_version = ""
    dashboard: Dashboard

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: an operator's page polls nothing, and errors are answered, not printed."""

    # -- answers ----------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, kind: str, *, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "max-age=60" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(data, separators=(",", ":")).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _refuse(self, status: int, why: str) -> None:
        self._json(status, {"error": why})

    def _host_ok(self) -> bool:
        hosts = self.dashboard.hosts
        if hosts and self.headers.get("Host", "") not in hosts:
            self._refuse(HTTPStatus.MISDIRECTED_REQUEST, "this server answers to its own address")
            return False
        return True

    # -- reads ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        path = self.path.split("?", 1)[0]
        board = self.dashboard
        if path == "/":
            self._send(200, board.page, "text/html; charset=utf-8")
        elif path.startswith("/static/") and path[8:] in _STATIC:
            name = path[8:]
            self._send(200, board.static[name], f"{_STATIC[name]}; charset=utf-8", cache=True)
        elif path == "/api/state":
            self._json(200, views.state(board.follower.snapshot, actions=board.actions))
        elif path == "/api/events":
            self._events()
        elif (match := _REVISION.fullmatch(path)) is not None:
            self._answer(lambda: views.revision(board.ctx, int(match.group(1))))
        else:
            self._refuse(404, "no such page")

    def _answer(self, make: Callable[[], dict[str, Any]]) -> None:
        try:
            data = make()
        except FileconsulError as exc:
            self._refuse(_STATUS.get(exc.exit_code, 500), str(exc))
            return
        self._json(200, data)

    def _events(self) -> None:
        """Server-sent events: the snapshot's version at once, then each new one, until the
        page goes; the page fetches /api/state for it (one parse of the JSON, by the browser's
        own parser, however many events landed meanwhile)."""
        board = self.dashboard
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        version = -1
        try:
            while not board.stopping.is_set():
                snapshot = board.follower.wait_for(version, KEEPALIVE)
                if snapshot.version == version:
                    self.wfile.write(b": still here\n\n")
                else:
                    version = snapshot.version
                    self.wfile.write(f"event: state\ndata: {version}\n\n".encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return

    # -- writes -----------------------------------------------------------------------------

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        board = self.dashboard
        path = self.path.split("?", 1)[0]
        if path not in ("/api/halt", "/api/resume"):
            self._refuse(404, "no such action")
            return
        why = self._forged()
        if why is not None:
            self._refuse(HTTPStatus.FORBIDDEN, why)
            return
        body = self._body()
        if body is None:
            self._refuse(HTTPStatus.BAD_REQUEST, "send a JSON object of at most 4 KiB")
            return
        reason = str(body.get("reason") or "").strip()[:500]
        try:
            done = self._halt(reason) if path == "/api/halt" else self._resume()
        except FileconsulError as exc:
            self._refuse(_STATUS.get(exc.exit_code, 500), str(exc))
            return
        board.follower.refresh()  # the page's next event shows what the action did
        self._json(200, done)

    def _forged(self) -> str | None:
        """Why this write is refused, or None when it may go."""
        board = self.dashboard
        if not board.actions:
            return "this dashboard only shows: it was started without --allow-actions"
        origin = self.headers.get("Origin")
        if origin != f"http://{self.headers.get('Host', '')}":
            return "a write must come from this dashboard's own page (Origin)"
        given = self.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), board.token.encode()):
            return f"a write must carry this dashboard's {TOKEN_HEADER}"
        if self.headers.get_content_type() != "application/json":
            return "a write is a JSON request"
        return None

    def _body(self) -> dict[str, Any] | None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return None
        if not 0 <= length <= _MAX_BODY:
            return None
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _halt(self, reason: str) -> dict[str, Any]:
        board, ctx = self.dashboard, self.dashboard.ctx
        why = reason or f"halted from the dashboard by {current_user()}"
        made = rollout.halt_head(ctx.client, ctx.prefix, board.node, why, reports.now())
        if made is None:
            return {"done": False, "message": "the head revision is halted already"}
        return {"done": True, "message": f"halted the rollout of r{made.revision}: {made.reason}"}

    def _resume(self) -> dict[str, Any]:
        board = self.dashboard
        lifted = rollout.resume(board.ctx.client, board.ctx.prefix)
        if lifted is None:
            return {"done": False, "message": "nothing is halted"}
        stop = lifted.halt
        what = f"the halt of r{stop.revision}" if stop is not None else "an unreadable halt"
        return {"done": True, "message": f"lifted {what}; the watchers held back go on"}


def make_server(board: Dashboard, host: str, port: int) -> ThreadingHTTPServer:
    """The server, bound (port 0: any free port) but not serving yet."""
    board.load()
    handler = type("DashboardHandler", (Handler,), {"dashboard": board})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    board.hosts = allowed_hosts(host, server.server_address[1])
    return server
