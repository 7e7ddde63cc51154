"""Aggregation compute: iotfl's decode + dequantize + weighted sum against Flower's FedAvg, same updates, same run.

1,000 device updates of the digits model (64-32-10, P = 2,410) are quantized and encoded once as the contract's
msgpack ``up`` messages (with the ``meta`` a simulated device sends). Timed, alternating, ``--repeats`` times:

- **iotfl** — from the wire bytes: ``Up.decode`` (every contract check) and ``WeightedSum.add_quantized`` (int8 × scale
  folded into the float64 Σ n·delta, what the gateway's collector does per accepted update), then the mean delta;
- **Flower** — ``flwr.server.strategy.aggregate.aggregate`` on the same updates already dequantized into float32
  per-layer arrays (its deserialization is not timed: the anchor does strictly less work than ours);
- context rows: our weighted sum alone on pre-decoded updates; the gateway's whole ``Collector.ingest`` (topic,
  decode, dedup, round checks, fold, ack); and Flower from its own wire form, ``parameters_to_ndarrays`` (what its
  ``FedAvg.aggregate_fit`` does to each client's ``Parameters``) + ``aggregate``, the like-for-like pipeline.

The figure is the median over repetitions of (iotfl updates/s) / (Flower updates/s), each pair timed back to back.
Flower comes from the ``benchmarks`` extra (its own venv, see benchmarks/README.md); without it the Flower rows are
skipped with a note and the ratio is null.

    python benchmarks/aggregate.py                  # 1,000 updates, 7 repetitions
    python benchmarks/aggregate.py --quick          # smoke run: 100 updates, 2 repetitions
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from flcore.fedavg import WeightedSum
from flcore.messages import Up
from flcore.model import ModelSpec
from flcore.quantize import quantize
from flcore.topics import GatewayTopics
from gateway.collector import Collector
from gateway.verdicts import SubRound

DIGITS_LAYERS = (64, 32, 10)  # the digits model iotfl.datasets builds: 8×8 pixels, one hidden layer of 32, 10 classes
CHUNK = 256  # the cloud's default quantization chunk
TARGET_RATIO = 1.0
FLOWER_FUNCTION = "flwr.server.strategy.aggregate.aggregate"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "aggregate.json"
TOPICS = GatewayTopics("default", "gw0")

Flower = Callable[[list[tuple[list[np.ndarray], int]]], list[np.ndarray]]
FlowerDecode = Callable[[Any], list[np.ndarray]]


@dataclass(frozen=True, eq=False)
class Workload:
    """The same updates three ways: wire bytes (ours), decoded ``Up`` (context) and float32 layer arrays (Flower)."""

    spec: ModelSpec
    payloads: list[bytes]
    ups: list[Up]
    layers: list[tuple[list[np.ndarray], int]]


def workload(updates: int, seed: int) -> Workload:
    """``updates`` device deltas of plausible size (per-layer spread, 10–200 samples each), quantized and encoded."""
    spec = ModelSpec(DIGITS_LAYERS)
    rng = np.random.default_rng(seed)
    payloads = []
    for i in range(updates):
        delta = (rng.normal(size=spec.param_count) * rng.uniform(0.001, 0.05)).astype(np.float32)
        scales, q = quantize(delta, CHUNK)
        meta = {"battery": round(float(rng.uniform(0.2, 1.0)), 4), "train_ms": 40, "ram_class": "m", "fw": "sim"}
        up = Up(f"d{i:05d}", 1, 0, int(rng.integers(10, 201)), float(rng.uniform(0.1, 2.0)), i + 1, CHUNK, scales, q)
        payloads.append(Up(**{**up.__dict__, "meta": meta}).encode())
    ups = [Up.decode(p, params=spec.param_count) for p in payloads]
    layers = [([a.copy() for pair in spec.unflatten(u.delta()) for a in pair], u.n) for u in ups]
    return Workload(spec, payloads, ups, layers)


def ours(w: Workload) -> np.ndarray:
    """From the wire bytes to the sample-weighted mean delta."""
    params = w.spec.param_count
    acc = WeightedSum(params)
    for payload in w.payloads:
        up = Up.decode(payload, params=params)
        acc.add_quantized(up.q, up.scales, up.chunk, up.n, up.loss)
    return acc.mean_delta()


def ours_sum_only(w: Workload) -> np.ndarray:
    acc = WeightedSum(w.spec.param_count)
    for up in w.ups:
        acc.add_quantized(up.q, up.scales, up.chunk, up.n, up.loss)
    return acc.mean_delta()


def collector(w: Workload) -> np.ndarray:
    """The gateway's whole ingest path: every update through ``Collector.ingest`` (and its ack), then the mean."""
    c = Collector(TOPICS)
    c.open(SubRound(1, 0, 0, w.spec.param_count))
    for up, payload in zip(w.ups, w.payloads, strict=True):
        c.ingest(TOPICS.up(up.dev), payload)
    return c.close().mean_delta()


def flower_mean(aggregate: Flower, w: Workload) -> np.ndarray:
    return np.concatenate([a.ravel() for a in aggregate(w.layers)])


@dataclass(frozen=True)
class FlowerApi:
    version: str
    aggregate: Flower
    encode: Callable[[list[np.ndarray]], Any]
    decode: FlowerDecode


def load_flower() -> FlowerApi | None:
    """Flower's ``aggregate`` and its (de)serialization of ``Parameters``, or None when flwr is not installed."""
    try:
        import flwr
        from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
        from flwr.server.strategy.aggregate import aggregate
    except ImportError:
        return None
    return FlowerApi(flwr.__version__, aggregate, ndarrays_to_parameters, parameters_to_ndarrays)


def seconds(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Row:
    name: str
    what: str
    times: list[float]

    def rate(self, updates: int) -> float:
        return updates / statistics.median(self.times)


def measure(w: Workload, repeats: int, flower: FlowerApi | None) -> tuple[list[Row], list[float]]:
    """Each candidate once per repetition, in turn; the per-repetition ratios ours/Flower (same moment's load)."""
    rows = [
        Row("iotfl", "Up.decode + add_quantized (from wire bytes)", []),
        Row("iotfl sum only", "add_quantized on decoded updates", []),
        Row("gateway ingest", "Collector.ingest: rules 1-5 + ack", []),
    ]
    runs: list[Callable[[], Any]] = [lambda: ours(w), lambda: ours_sum_only(w), lambda: collector(w)]
    if flower is not None:
        wire = [(flower.encode(arrays), n) for arrays, n in w.layers]
        rows.append(Row("Flower + its decode", "parameters_to_ndarrays + aggregate", []))
        runs.append(lambda: flower.aggregate([(flower.decode(p), n) for p, n in wire]))
        rows.append(Row("Flower", f"{FLOWER_FUNCTION} (float32 arrays)", []))
        runs.append(lambda: flower.aggregate(w.layers))
    ratios = []
    for _ in range(repeats):
        for row, run in zip(rows, runs, strict=True):
            row.times.append(seconds(run))
        if flower is not None:
            ratios.append(rows[-1].times[-1] / rows[0].times[-1])
    return rows, ratios


def table(rows: list[Row], updates: int, ratio: float | None) -> Table:
    t = Table(title=f"Aggregation of {updates:,} digits updates (P = 2,410): updates/s, median")
    t.add_column("path")
    t.add_column("what is timed")
    t.add_column("updates/s", justify="right")
    t.add_column("µs/update", justify="right")
    flower = next((r for r in rows if r.name == "Flower"), None)
    t.add_column("× Flower", justify="right")
    for row in rows:
        rate = row.rate(updates)
        versus = f"{rate / flower.rate(updates):.2f}" if flower else "-"
        t.add_row(row.name, row.what, f"{rate:,.0f}", f"{1e6 / rate:.1f}", versus)
    if ratio is not None:
        met = "[green]met[/green]" if ratio >= TARGET_RATIO else "[red]not met[/red]"
        t.caption = f"iotfl / Flower, median of paired repetitions: {ratio:.2f}× (target ≥ {TARGET_RATIO:.1f}×: {met})"
    return t


def main(
    updates: Annotated[int, typer.Option(min=1, help="device updates aggregated per repetition")] = 1000,
    repeats: Annotated[int, typer.Option(min=1, help="timed repetitions (the median counts)")] = 7,
    seed: Annotated[int, typer.Option(help="seed of the synthetic updates")] = 0,
    quick: Annotated[bool, typer.Option(help="smoke run: 100 updates, 2 repetitions")] = False,
    json_path: Annotated[Path, typer.Option("--json", help="where to write the JSON report")] = DEFAULT_JSON,
) -> None:
    """Time iotfl's decode + dequantize + weighted sum against Flower's FedAvg aggregate on the same updates."""
    if quick:
        updates, repeats = 100, 2
    console = Console() if sys.stdout.isatty() else Console(width=160)
    flower = load_flower()
    if flower is None:
        console.print("[yellow]flwr is not installed: Flower rows skipped (pip install -e '.[benchmarks]')[/yellow]")
    with console.status(f"encoding {updates:,} updates"):
        w = workload(updates, seed)
    load_before = os.getloadavg()
    with console.status(f"timing {repeats} repetitions"):
        rows, ratios = measure(w, repeats, flower)
    load_after = os.getloadavg()
    ratio = statistics.median(ratios) if ratios else None
    ours_mean = ours(w)
    agree = None if flower is None else float(np.max(np.abs(ours_mean - flower_mean(flower.aggregate, w))))
    console.print(table(rows, updates, ratio))
    if agree is not None:
        console.print(f"largest |iotfl − Flower| over the mean delta: {agree:.2e}")
    console.print(f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} cpus")
    report = {
        "config": {"updates": updates, "repeats": repeats, "seed": seed, "layers": list(DIGITS_LAYERS), "chunk": CHUNK},
        "params": w.spec.param_count,
        "payload_bytes": len(w.payloads[0]),
        "flower": {"function": FLOWER_FUNCTION, "version": flower.version} if flower else None,
        "rows": [
            {
                "name": r.name,
                "what": r.what,
                "updates_per_s": round(r.rate(updates), 1),
                "seconds": [round(t, 6) for t in r.times],
            }
            for r in rows
        ],
        "ratios": [round(x, 4) for x in ratios],
        "ratio": None if ratio is None else round(ratio, 4),
        "target": TARGET_RATIO,
        "met": None if ratio is None else ratio >= TARGET_RATIO,
        "max_abs_diff": agree,
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "cpus": os.cpu_count(),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {json_path}")


if __name__ == "__main__":
    typer.run(main)
