"""The gateway's Prometheus metrics (prometheus-client) and the HTTP server that exposes them.

Each gateway has a registry of its own (several gateways run in one process in tests and ``iotfl demo``). Bytes in
and the ingest latency are counted as updates arrive; everything else is read at scrape time from the gateway's
status snapshot (``RoundLoop.snapshot``, the same values as its status file, ``gateway.health``), so the two never
disagree. ``docs/operations.md`` lists every metric with its labels.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.collector import DROPPED_TOPIC, JOURNAL_ERROR, PARKED, STALE

log = logging.getLogger(__name__)

# Collector counter keys that are ack statuses; every other key but NOT_UPDATES is a reject reason.
RESULTS = ("accepted", "duplicate", "late")
REJECTED = "rejected"
# Collector counter keys that are no answer to an update (→ their ``outcome`` label): parked (answered later), stale
# (also counted accepted), a message on an invalid topic (no device to answer), a batch the journal could not commit
# (not acknowledged: the broker redelivers it).
NOT_UPDATES = {PARKED: "parked", STALE: "stale", DROPPED_TOPIC: "invalid_topic", JOURNAL_ERROR: "journal_error"}
# Seconds from an update's arrival to its PUBACK: the journal's group commit (an fsync) dominates.
INGEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

Snapshot = Callable[[], Mapping[str, Any]]


class GatewayMetrics:
    """One gateway's registry: what its node counts as updates arrive, and its ``watch``-ed status snapshot."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._bytes = Counter(
            "iotfl_gateway_update_bytes",
            "Bytes of update payloads received from devices.",
            registry=self.registry,
        )
        self._ingest = Histogram(
            "iotfl_gateway_ingest_seconds",
            "Time from an update's arrival at the gateway to its PUBACK (per acknowledged update).",
            buckets=INGEST_BUCKETS,
            registry=self.registry,
        )

    def received(self, size: int) -> None:
        self._bytes.inc(size)

    def acknowledged(self, waits: list[float]) -> None:
        """Observe each acknowledged update's wait from arrival to PUBACK (``UpReader``'s ``on_puback``)."""
        for wait in waits:
            self._ingest.observe(wait)

    def watch(self, snapshot: Snapshot) -> None:
        """Export the status ``snapshot`` returns at every scrape (it runs on the scraping thread)."""
        self.registry.register(_StatusCollector(snapshot))


class _StatusCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        counters: Mapping[str, int] = s["counters"]
        updates = CounterMetricFamily(
            "iotfl_gateway_updates",
            "Device updates answered, by result (accepted, duplicate, late, rejected).",
            labels=["result"],
        )
        rejected = CounterMetricFamily(
            "iotfl_gateway_updates_rejected",
            "Device updates rejected, by reason (the ack's reason).",
            labels=["reason"],
        )
        other = CounterMetricFamily(
            "iotfl_gateway_messages",
            "Other outcomes of messages on the up topics: parked, stale, invalid_topic, journal_error.",
            labels=["outcome"],
        )
        refusals = {k: v for k, v in counters.items() if k not in RESULTS and k not in NOT_UPDATES}
        for result in RESULTS:
            updates.add_metric([result], counters.get(result, 0))
        updates.add_metric([REJECTED], sum(refusals.values()))
        for reason, count in sorted(refusals.items()):
            rejected.add_metric([reason], count)
        for key, outcome in NOT_UPDATES.items():
            other.add_metric([outcome], counters.get(key, 0))
        yield from (updates, rejected, other)
        yield GaugeMetricFamily(
            "iotfl_gateway_round", "The global round being collected or last forwarded.", s["round"]
        )
        yield GaugeMetricFamily(
            "iotfl_gateway_mqtt_connected", "1 while connected to the broker.", int(bool(s["mqtt_connected"]))
        )
        yield GaugeMetricFamily(
            "iotfl_gateway_cloud_reachable", "1 when the last poll reached the cloud.", int(bool(s["cloud_reachable"]))
        )
        yield GaugeMetricFamily(
            "iotfl_gateway_devices_connected", "Live devices: their retained status names this gateway.", s["devices"]
        )
        yield GaugeMetricFamily("iotfl_gateway_outbox_depth", "Aggregates waiting to be posted.", s["outbox_depth"])
        oldest = s["outbox_oldest_s"]
        yield GaugeMetricFamily(
            "iotfl_gateway_outbox_oldest_seconds",
            "Age of the oldest aggregate waiting (0 when none).",
            0.0 if oldest is None else oldest,
        )
        yield CounterMetricFamily("iotfl_gateway_rounds_forwarded", "Aggregates the upstream accepted.", s["forwarded"])
        yield CounterMetricFamily("iotfl_gateway_rounds_refused", "Aggregates the upstream refused.", s["refused"])
        yield CounterMetricFamily(
            "iotfl_gateway_broker_dropped",
            "Messages the broker dropped ($SYS publish/messages/dropped), summed across broker restarts.",
            s["broker_dropped_seen"],
        )
        latest = s["broker_dropped"]
        yield GaugeMetricFamily(
            "iotfl_gateway_broker_dropped_reported",
            "The broker's own $SYS dropped counter as last published (NaN until the broker publishes it).",
            float("nan") if latest is None else latest,
        )


@dataclass
class MetricsServer:
    """prometheus-client's HTTP server (its own daemon thread) for one registry; ``port`` is the bound one."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.server.server_port

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(2.0)


class MetricsError(Exception):
    """The metrics port cannot be served (taken, or an address this machine does not have)."""


def serve(metrics: GatewayMetrics, host: str, port: int) -> MetricsServer:
    """Serve ``GET /metrics`` on ``host:port`` (port 0: a free one)."""
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return MetricsServer(server, thread)


__all__ = ["GatewayMetrics", "MetricsError", "MetricsServer", "serve"]
