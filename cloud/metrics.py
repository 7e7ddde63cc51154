"""Counters of this process and the Prometheus text exposition (format 0.0.4), written by hand."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

ACCEPTED, DUPLICATE = "accepted", "duplicate"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Gauges:
    """Values read from the database when metrics are scraped."""

    rounds_closed: int
    current_round: int
    model_version: int
    last_accuracy: float | None
    done: bool


class Metrics:
    """Aggregate outcomes counted since this process started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()

    def aggregate(self, outcome: str) -> None:
        """Count one POSTed aggregate: ``accepted``, ``duplicate`` or a rejection reason."""
        with self._lock:
            self._outcomes[outcome] += 1

    def outcomes(self) -> dict[str, int]:
        with self._lock:
            return dict(self._outcomes)

    def render(self, gauges: Gauges) -> str:
        outcomes = self.outcomes()
        rejected = {k: v for k, v in outcomes.items() if k not in (ACCEPTED, DUPLICATE)}
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

        metric("iotfl_rounds_closed_total", "counter", "Global rounds closed.", [("", gauges.rounds_closed)])
        metric(
            "iotfl_aggregates_total",
            "counter",
            "Gateway aggregates received by this process, by result.",
            [
                ('{result="accepted"}', outcomes.get(ACCEPTED, 0)),
                ('{result="duplicate"}', outcomes.get(DUPLICATE, 0)),
                ('{result="rejected"}', sum(rejected.values())),
            ],
        )
        metric(
            "iotfl_aggregates_rejected_total",
            "counter",
            "Gateway aggregates rejected by this process, by reason.",
            [(f'{{reason="{reason}"}}', count) for reason, count in sorted(rejected.items())],
        )
        metric("iotfl_current_round", "gauge", "The current global round.", [("", gauges.current_round)])
        metric("iotfl_model_version", "gauge", "The latest global model version.", [("", gauges.model_version)])
        accuracy = float("nan") if gauges.last_accuracy is None else gauges.last_accuracy
        metric("iotfl_last_accuracy", "gauge", "Held-out accuracy of the latest model (0..1).", [("", accuracy)])
        metric("iotfl_done", "gauge", "1 once the last round closed.", [("", int(gauges.done))])
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if value != value:
        return "NaN"
    return str(int(value)) if float(value).is_integer() else repr(float(value))
