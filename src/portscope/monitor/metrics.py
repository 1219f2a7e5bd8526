"""`watch --metrics ADDR:PORT`: the last cycle as Prometheus metrics, for a fleet's Prometheus,
Alertmanager and Grafana.

Why a collector that reads the last cycle instead of gauges set as we go: listeners come and go, and a
labelled gauge keeps a series for every label set it was ever given. Built from the last cycle at each
scrape, a listener that went away is gone from the next scrape, as it is from the host. Counters
(cycles, errors, alerts) and the cycle-duration histogram are ordinary metrics beside it.

Label values come from other processes (process names) and the file (target names): the exposition
format escapes them, and they are cleaned of control characters like everything we show.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from portscope.errors import BadInput, CannotDo
from portscope.textsafe import clean

if TYPE_CHECKING:
    from portscope.monitor.watch import CycleReport

NAMESPACE = "portscope"
LABEL_MAX = 128  # characters of a label value: a process name is 15, a target name is ours


def _label(value: Any) -> str:
    return "" if value is None else clean(str(value))[:LABEL_MAX]


class WatchMetrics(Collector):
    """Holds the last cycle; `registry` is what the HTTP server exposes."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._last: CycleReport | None = None
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=True)
        self.cycles = Counter(f"{NAMESPACE}_cycles", "Watch cycles completed.", registry=self.registry)
        self.errors = Counter(
            f"{NAMESPACE}_cycle_errors",
            "Watch cycles that failed (the error is logged; the next cycle runs as planned).",
            registry=self.registry,
        )
        self.duration = Histogram(
            f"{NAMESPACE}_cycle_duration_seconds",
            "Wall time of one watch cycle (snapshot, targets, history, alerts).",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.alerts_sent = Counter(
            f"{NAMESPACE}_alerts_sent",
            "Outbox messages delivered, per sink.",
            ["sink"],
            registry=self.registry,
        )
        self.alert_failures = Counter(
            f"{NAMESPACE}_alert_failures",
            "Deliveries that failed and will be retried (or were given up), per sink.",
            ["sink"],
            registry=self.registry,
        )
        self.registry.register(self)

    def observe(self, report: CycleReport) -> None:
        self.cycles.inc()
        self.duration.observe(report.seconds)
        if report.delivery is not None:
            for sink, n in report.delivery.sent_by_sink.items():
                self.alerts_sent.labels(_label(sink)).inc(n)
            for sink, n in report.delivery.failed_by_sink.items():
                self.alert_failures.labels(_label(sink)).inc(n)
        with self._lock:
            self._last = report

    def failed(self) -> None:
        self.errors.inc()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the families depend on the last cycle: none to describe in advance

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            report = self._last
        if report is None:
            return
        host = _label(self.host)
        listener = GaugeMetricFamily(
            f"{NAMESPACE}_listener",
            "A listening socket on this host (1), by protocol, address, port and owning process.",
            labels=["host", "proto", "address", "port", "process", "user"],
        )
        for item in report.listeners:
            listener.add_metric(
                [host, item.proto, item.address, str(item.port), _label(item.process), _label(item.user)], 1
            )
        yield listener
        count = GaugeMetricFamily(
            f"{NAMESPACE}_listeners", "Listening sockets on this host.", labels=["host"]
        )
        count.add_metric([host], len(report.listeners))
        yield count
        diffs = GaugeMetricFamily(
            f"{NAMESPACE}_baseline_differences",
            "How this host differs from its baseline now, per kind (missing, unexpected, changed, target, "
            "certificate); alerts follow once a difference persists.",
            labels=["host", "kind"],
        )
        from portscope.policy.baseline import DIFFERENCE_KINDS

        for kind in DIFFERENCE_KINDS:
            diffs.add_metric([host, kind], sum(1 for d in report.differences if d.kind == kind))
        yield diffs
        pending = GaugeMetricFamily(
            f"{NAMESPACE}_differences_pending",
            "Differences seen but not lasted long enough to alert.",
            labels=["host"],
        )
        pending.add_metric([host], report.pending)
        yield pending
        last = GaugeMetricFamily(
            f"{NAMESPACE}_last_cycle_timestamp_seconds",
            "When the last cycle ran (Unix time).",
            labels=["host"],
        )
        last.add_metric([host], report.at.timestamp())
        yield last
        yield from self._targets(report, host)

    def _targets(self, report: CycleReport, host: str) -> Iterator[Metric]:
        labels = ["host", "target", "target_host", "port", "proto"]
        up = GaugeMetricFamily(
            f"{NAMESPACE}_target_up",
            "1 when the target's status (and service, when expected) is what the baseline expects.",
            labels=labels,
        )
        status = GaugeMetricFamily(
            f"{NAMESPACE}_target_status",
            "The target's status this cycle (1 for the status it has).",
            labels=[*labels, "status"],
        )
        latency = GaugeMetricFamily(
            f"{NAMESPACE}_target_latency_seconds",
            "Time to the target's deciding answer (connect, refusal, UDP reply).",
            labels=labels,
        )
        days = GaugeMetricFamily(
            f"{NAMESPACE}_certificate_days_left",
            "Days until the target's TLS certificate expires (negative once expired).",
            labels=labels,
        )
        for s in report.targets:
            t = s.target
            values = [host, _label(s.label), _label(t.host), str(t.port), t.proto]
            up.add_metric(values, 1 if s.as_expected else 0)
            status.add_metric([*values, s.status], 1)
            if s.latency_ms is not None:
                latency.add_metric(values, s.latency_ms / 1000)
            if s.days_left is not None:
                days.add_metric(values, s.days_left)
        yield from (up, status, latency, days)


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:9310`, `[::1]:9310`, `:9310` (every address) -> (address, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadInput(f"--metrics {text!r}: give ADDRESS:PORT, e.g. 127.0.0.1:9310 or [::1]:9310")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise BadInput(f"--metrics {text!r}: {host!r} is not an IP address (e.g. 127.0.0.1:9310)") from None
    return host, int(port_text)


def serve(metrics: WatchMetrics, listen: str) -> None:
    """Start the exposition server in a daemon thread (prometheus_client's own)."""
    from prometheus_client import start_http_server

    host, port = parse_listen(listen)
    try:
        start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as e:
        raise CannotDo(f"--metrics {listen}: cannot listen there: {e.strerror or e}") from None
