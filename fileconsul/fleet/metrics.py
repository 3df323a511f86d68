"""Prometheus metrics for `watch --metrics-addr HOST:PORT`, served at /metrics by the
prometheus_client library (imported only when asked for)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fileconsul.errors import UsageError

if TYPE_CHECKING:
    from fileconsul.fleet.deliver import Delivery


class Metrics:
    """The watch's figures; with no address, nothing is served and nothing is counted."""

    def __init__(self, addr: str | None = None) -> None:
        self._server: Any = None
        self._thread: Any = None
        if addr is None:
            self.enabled = False
            return
        self.enabled = True
        host, _, port = addr.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--metrics-addr {addr!r}: give HOST:PORT, with a port of 1 to 65535")
        import prometheus_client as prom

        registry = prom.CollectorRegistry()
        self.revision = prom.Gauge(
            "fileconsul_revision", "The revision this node holds.", registry=registry
        )
        self.head = prom.Gauge(
            "fileconsul_head_revision", "The head revision this node last saw.", registry=registry
        )
        self.last_apply = prom.Gauge(
            "fileconsul_last_apply_timestamp_seconds",
            "When this node last applied a change (Unix time).",
            registry=registry,
        )
        self.apply_seconds = prom.Histogram(
            "fileconsul_apply_duration_seconds", "Time to apply a change.", registry=registry
        )
        self.check_seconds = prom.Histogram(
            "fileconsul_check_duration_seconds", "Time the --check command took.", registry=registry
        )
        self.drifted_files = prom.Gauge(
            "fileconsul_drifted_files",
            "Managed files changed here by hand, at the last scan.",
            registry=registry,
        )
        counters = {
            "applies": "Changes applied.",
            "rejections": "Revisions the --check command rejected.",
            "hook_failures": "Runs of --exec that exited non-zero.",
            "halts": "Rollouts this node halted.",
            "conflicts": "Applies refused on a conflict.",
            "wakeups": "Wake-ups of the watch.",
            "received_bytes": "Bytes received from Consul.",
            "drift_put_back": "Drifted files put back to their committed version (--heal).",
        }
        self.counters = {
            name: prom.Counter(f"fileconsul_{name}", text, registry=registry)
            for name, text in counters.items()
        }
        try:
            self._server, self._thread = prom.start_http_server(
                int(port), host or "127.0.0.1", registry
            )
        except OSError as exc:
            raise UsageError(
                f"cannot serve metrics on {addr} ({exc.strerror or exc}): choose another "
                "--metrics-addr"
            ) from exc

    def count(self, name: str, amount: float = 1) -> None:
        if self.enabled and amount:
            self.counters[name].inc(amount)

    def saw_head(self, revision: int) -> None:
        if self.enabled:
            self.head.set(revision)

    def drifted(self, files: int) -> None:
        if self.enabled:
            self.drifted_files.set(files)

    def holds(self, revision: int) -> None:
        if self.enabled and revision:
            self.revision.set(revision)

    def delivered(self, delivery: Delivery) -> None:
        if not self.enabled:
            return
        from fileconsul.errors import CheckRejected, ConflictError

        outcome = delivery.outcome
        if delivery.changed and outcome is not None:
            self.count("applies")
            self.apply_seconds.observe(delivery.apply_seconds)
            self.last_apply.set_to_current_time()
        if delivery.check is not None:
            self.check_seconds.observe(delivery.check_seconds)
        self.count("rejections", isinstance(delivery.error, CheckRejected))
        self.count("conflicts", isinstance(delivery.error, ConflictError))
        self.count("hook_failures", delivery.hook_exit not in (None, 0))
        self.count("halts", delivery.halted_here)
        if outcome is not None and not outcome.held:
            self.holds(outcome.revision)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
