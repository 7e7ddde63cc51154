"""The cloud's Prometheus metrics (prometheus-client), in a registry of the app's own so that several clouds in one
process (tests, ``iotfl demo``) never share or clash over counters.

Counted as they happen: aggregate POSTs by result and rejection reason, their body bytes and handling time. Read
from the database at scrape time: rounds closed, the current round, the model version and its accuracy, the
gateways and devices seen. ``docs/operations.md`` lists every metric with its labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

# Results of an aggregate POST with a label of their own; every other outcome is a rejection, counted by reason.
RESULTS = ("accepted", "carried", "duplicate", "late")
REJECTED = "rejected"
# Seconds: an accepted aggregate commits (SQLite fsync) and may close a round (FedAvg plus a held-out evaluation).
POST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Gauges:
    """Values read from the database when metrics are scraped."""

    rounds_closed: int
    current_round: int
    model_version: int
    last_accuracy: float | None
    done: bool
    gateways_seen: int
    devices_seen: int


class Metrics:
    """The cloud's registry: counters it is told about, and the gauges of a ``watch``-ed reader."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._aggregates = Counter(
            "iotfl_aggregates",
            "Gateway aggregates POSTed to this process, by result (accepted, carried, duplicate, late, rejected).",
            ["result"],
            registry=self.registry,
        )
        self._rejected = Counter(
            "iotfl_aggregates_rejected",
            "Gateway aggregates rejected by this process, by reason (the problem's reason code).",
            ["reason"],
            registry=self.registry,
        )
        self._bytes = Counter(
            "iotfl_aggregate_bytes", "Bytes of aggregate POST bodies read by this process.", registry=self.registry
        )
        self._post_seconds = Histogram(
            "iotfl_aggregate_post_seconds",
            "Time to answer an aggregate POST, from its first dependency to the answer.",
            buckets=POST_BUCKETS,
            registry=self.registry,
        )
        for result in (*RESULTS, REJECTED):
            self._aggregates.labels(result=result)  # exported at 0 before the first one

    def aggregate(self, outcome: str) -> None:
        """Count one POSTed aggregate: one of ``RESULTS`` or a rejection reason."""
        if outcome in RESULTS:
            self._aggregates.labels(result=outcome).inc()
        else:
            self._aggregates.labels(result=REJECTED).inc()
            self._rejected.labels(reason=outcome).inc()

    def bytes_in(self, size: int) -> None:
        self._bytes.inc(size)

    @contextmanager
    def timed_post(self) -> Iterator[None]:
        """Observe the time the ``with`` body takes in the POST latency histogram (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._post_seconds.observe(time.perf_counter() - start)

    def watch(self, read: Callable[[], Gauges]) -> None:
        """Export what ``read`` returns at every scrape (it runs on the scraping thread)."""
        self.registry.register(_GaugeCollector(read))

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition the ``Accept`` header asks for (OpenMetrics or the text format) and its content type."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class _GaugeCollector(Collector):
    def __init__(self, read: Callable[[], Gauges]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        g = self._read()
        yield CounterMetricFamily("iotfl_rounds_closed", "Global rounds closed.", value=g.rounds_closed)
        yield GaugeMetricFamily("iotfl_current_round", "The current global round.", value=g.current_round)
        yield GaugeMetricFamily("iotfl_model_version", "The latest global model version.", value=g.model_version)
        accuracy = float("nan") if g.last_accuracy is None else g.last_accuracy
        yield GaugeMetricFamily("iotfl_last_accuracy", "Held-out accuracy of the latest model (0..1).", value=accuracy)
        yield GaugeMetricFamily("iotfl_done", "1 once the last round closed.", value=int(g.done))
        yield GaugeMetricFamily("iotfl_gateways_seen", "Gateways that checked in at least once.", value=g.gateways_seen)
        yield GaugeMetricFamily(
            "iotfl_devices_seen", "Distinct devices named in accepted aggregates.", value=g.devices_seen
        )


__all__ = ["Gauges", "Metrics"]
