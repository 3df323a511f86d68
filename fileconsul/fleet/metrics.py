"""Prometheus metrics for `watch --metrics-addr HOST:PORT` and `replicate --metrics-addr`,
served at /metrics by the prometheus_client library (imported only when asked for)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fileconsul.errors import UsageError

if TYPE_CHECKING:
    from fileconsul.fleet.deliver import Delivery


class Served:
    """Figures served at http://HOST:PORT/metrics, defined by `define`; with no address,
    nothing is served and nothing is counted."""

    def __init__(self, addr: str | None = None) -> None:
        self._server: Any = None
        self._thread: Any = None
        self.enabled = addr is not None
        if addr is None:
            return
        host, _, port = addr.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--metrics-addr {addr!r}: give HOST:PORT, with a port of 1 to 65535")
        import prometheus_client as prom

        registry = prom.CollectorRegistry()
        self.define(prom, registry)
        try:
            self._server, self._thread = prom.start_http_server(
                int(port), host or "127.0.0.1", registry
            )
        except OSError as exc:
            raise UsageError(
                f"cannot serve metrics on {addr} ({exc.strerror or exc}): choose another "
                "--metrics-addr"
            ) from exc

    def define(self, prom: Any, registry: Any) -> None:
        """Make the figures, in `registry`."""

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()


class Metrics(Served):
    """The watch's figures."""

    def define(self, prom: Any, registry: Any) -> None:
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


class ReplicationMetrics(Served):
    """The replicator's figures, each target's labelled with its datacenter."""

    def define(self, prom: Any, registry: Any) -> None:
        def gauge(name: str, text: str, *labels: str) -> Any:
            return prom.Gauge(f"fileconsul_replication_{name}", text, labels, registry=registry)

        def counter(name: str, text: str) -> Any:
            return prom.Counter(f"fileconsul_{name}", text, ["target"], registry=registry)

        self.source = gauge("source_revision", "The source's head revision, as last read.")
        self.target = gauge("target_revision", "The target's head revision.", "target")
        self.lag = gauge("lag_revisions", "Source revisions the target lacks.", "target")
        self.lag_seconds = gauge(
            "lag_seconds",
            "Seconds since the oldest source revision the target lacks was committed.",
            "target",
        )
        self.active = gauge("active", "1 where this replicator holds the lock.", "target")
        self.counters = {
            "replicated": counter("replicated_revisions", "Revisions committed in the target."),
            "whole": counter("replication_whole_takes", "Head trees taken whole."),
            "received": counter("replication_received_bytes", "Bytes read from the target."),
            "sent": counter("replication_sent_bytes", "Bytes sent to the target."),
            "retries": counter("replication_retries", "Failures retried after a back-off."),
        }
        self.source_bytes = prom.Counter(
            "fileconsul_replication_source_bytes",
            "Bytes read from the source (its head, records and contents).",
            registry=registry,
        )

    def count(self, target: str, name: str, amount: float = 1) -> None:
        if self.enabled and amount:
            self.counters[name].labels(target).inc(amount)

    def count_source(self, amount: int) -> None:
        if self.enabled and amount:
            self.source_bytes.inc(amount)

    def standing(self, target: str, *, source: int, held: int, behind_since: float | None) -> None:
        """Where `target` stands: the source's revision, the one it holds, and since when
        (Unix time) the oldest revision it lacks has existed (None: it lacks none)."""
        if not self.enabled:
            return
        self.source.set(source)
        self.target.labels(target).set(held)
        self.lag.labels(target).set(max(0, source - held))
        since = behind_since
        self.lag_seconds.labels(target).set_function(
            lambda: 0.0 if since is None else max(0.0, time.time() - since)
        )

    def holding(self, target: str, held: bool) -> None:
        if self.enabled:
            self.active.labels(target).set(1 if held else 0)
