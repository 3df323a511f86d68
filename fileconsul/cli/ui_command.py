"""ui: the fleet on a web page that stays live; halt and resume from it when allowed."""

from __future__ import annotations

import signal
import threading
from http.server import ThreadingHTTPServer
from types import FrameType

import click

from fileconsul.cli.base import NODE, cli, common_options, open_run
from fileconsul.cli.web import server
from fileconsul.errors import PermissionDenied
from fileconsul.fleet import rollout
from fileconsul.fleet.follow import Follower
from fileconsul.store.layout import halt_key

DEFAULT_LISTEN = "127.0.0.1:8513"


@cli.command()
@common_options
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Where to serve the page (port 0: any free port, printed at start).",
)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Show halt and resume buttons and accept them; the token must be allowed to write "
    "<prefix>.fileconsul/halt. Without it the page only shows, and refuses every write.",
)
@NODE
@click.option(
    "--stale/--consistent",
    default=True,
    help="Let any Consul server answer (the default), or only the leader.",
)
@click.pass_context
def ui(ctx: click.Context, listen: str, allow_actions: bool, node: str | None, stale: bool) -> None:
    """Serve a web page of the fleet that updates itself as commits and reports land: the
    head, every node's state and how far behind it is, the halt, the revisions and their
    diffs. The same data is at /api/state as JSON. Stops on SIGTERM or SIGINT (exit 0).

    \b
    Examples:
      fileconsul ui                                  # http://127.0.0.1:8513/
      fileconsul ui --listen 127.0.0.1:9000 --allow-actions
      curl -s http://127.0.0.1:8513/api/state | jq .fleet.counts
    """
    host, port = server.parse_listen(listen)
    with open_run(ctx, stale=stale, local=False) as (run, out):
        if allow_actions and not rollout.can_halt(run.client, run.prefix):
            raise PermissionDenied(
                f"--allow-actions: this token may not write {halt_key(run.prefix)}; give one "
                "that may, or leave the page read-only"
            )
        if not server.is_loopback(host):
            out.warn(f"serving on {host}: whoever reaches it sees the fleet")
        follower = Follower(run).start()
        board = server.Dashboard(run, follower, allow_actions, run.client.node_name(node))
        httpd = server.make_server(board, host, port)
        mode = "halt and resume allowed" if allow_actions else "read-only"
        where = f"{host}:{httpd.server_address[1]}"
        out.notice(f"serving the dashboard of {run.prefix} at http://{where}/ ({mode})")
        try:
            _serve(httpd)
        finally:
            board.stopping.set()
            follower.stop()
            httpd.server_close()


def _serve(httpd: ThreadingHTTPServer) -> None:
    """Serve from a thread of its own until SIGTERM or SIGINT."""
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGTERM, signal.SIGINT)}
    serving = threading.Thread(target=httpd.serve_forever, name="fileconsul-ui", daemon=True)
    serving.start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        httpd.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
