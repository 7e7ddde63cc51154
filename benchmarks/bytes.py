"""Bytes benchmark: final accuracy against cumulative bytes up for each update encoding, through the real stack.

Every run is one ``iotfl demo --enc ENC`` (its own broker, cloud, gateways and simulated fleet over real MQTT and
HTTP; the gateways name the encoding in their tasks, the devices follow) on digits, Dirichlet α = 0.5, batteries off
(every device that can train does, every round), the same seeds for every encoding. Encodings: ``f32`` (the float32
delta itself, a real run: the reference), ``int8`` (the contract's), ``int4`` and ``topk`` (with error feedback).

    python benchmarks/bytes.py                  # 4 encodings × seeds 0,1: table + JSON + PNG (~8 min on 2 cores)
    python benchmarks/bytes.py --quick          # smoke run: f32 and topk, 4 devices, 1 round, seed 0

Bytes are counted two ways: *payload*, the MQTT payload bytes of every ``up`` the gateways received (the demo's
``bytes_up``: msgpack framing, ids, counters and ``meta`` included), and *delta*, the bytes of the encoded delta in
one update (``q`` + ``scales`` + ``idx``). Every ratio is against the f32 run of the same seeds, in the same
invocation. Writes ``bytes.json`` and ``bytes.png`` in ``--out``; each run's demo log stays in ``--out/logs-bytes``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

try:
    from benchmarks.demo_run import run_demo
except ModuleNotFoundError:  # run as a script (`python benchmarks/NAME.py`): this folder is on sys.path
    from demo_run import run_demo  # type: ignore[no-redef]


ENCODINGS = ("f32", "int8", "int4", "topk")
REFERENCE = "f32"
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# Seconds one demo run may take per round beyond a fixed start-up allowance, before it is stopped.
RUN_SECONDS_PER_ROUND = 30.0
RUN_STARTUP_SECONDS = 120.0
# The targets: (encoding or None for "any", least ratio, most accuracy cost in points).
TARGETS = (("int8", 3.9, 0.5), (None, 8.0, 2.0))

console = Console(width=120)


def load_average() -> str:
    """``uptime``'s load averages, to say how busy the machine was."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def run_one(enc: str, seed: int, config: dict[str, Any], logs: Path) -> dict[str, Any]:
    """One ``iotfl demo`` run; its row (``final_accuracy`` None when it failed)."""
    name = f"{enc}_seed{seed}"
    report = logs / f"{name}.json"
    report.unlink(missing_ok=True)
    options = [
        *("--devices", str(config["devices"]), "--gateways", str(config["gateways"])),
        *("--rounds", str(config["rounds"]), "--alpha", str(config["alpha"]), "--seed", str(seed)),
        *("--dataset", config["dataset"], "--no-battery", "--enc", enc, "--topk", str(config["topk"])),
        *("--json", str(report)),
    ]
    timeout = RUN_STARTUP_SECONDS + RUN_SECONDS_PER_ROUND * config["rounds"]
    started = time.monotonic()
    code = run_demo(options, logs / f"{name}.log", timeout)
    row: dict[str, Any] = {"enc": enc, "seed": seed, "seconds": round(time.monotonic() - started, 1)}
    row["final_accuracy"] = None
    if code != 0 or not report.exists():
        row["error"] = f"demo exited with {code}" if code != -1 else f"timed out after {timeout:.0f} s"
        return row
    data = json.loads(report.read_text())
    rounds = data["rounds"]
    row["final_accuracy"] = data["final_accuracy"]
    row["accuracy_by_round"] = [r["accuracy"] for r in rounds]
    row["cumulative_bytes_by_round"] = np.cumsum([r["bytes_up"] for r in rounds]).tolist()
    row["bytes_up_total"] = data["bytes_up_total"]
    row["updates"] = sum(r["k"] for r in rounds)
    row["params"] = data["config"]["params"]
    row["centralized_accuracy"] = data["centralized_accuracy"]
    return row


def delta_bytes(enc: str, params: int, topk: float) -> int:
    """Bytes of one encoded delta of ``params`` values at the cloud's default chunk."""
    from flcore.encodings import encode
    from flcore.quantize import DEFAULT_CHUNK

    body, _ = encode(np.random.default_rng(0).normal(size=params), enc, DEFAULT_CHUNK, topk)
    return body.nbytes


def summarize(runs: list[dict[str, Any]], encodings: tuple[str, ...], topk: float) -> dict[str, dict[str, Any]]:
    """Per encoding, over the seeds every encoding finished: mean final accuracy, mean bytes, ratios to f32."""
    done = [r for r in runs if r["final_accuracy"] is not None]
    seeds = sorted(
        {r["seed"] for r in done if all(any(o["seed"] == r["seed"] and o["enc"] == e for o in done) for e in encodings)}
    )
    by = {(r["enc"], r["seed"]): r for r in done}
    out: dict[str, dict[str, Any]] = {}
    if not seeds:
        return out
    params = by[(encodings[0], seeds[0])]["params"]
    for enc in encodings:
        rows = [by[(enc, s)] for s in seeds]
        out[enc] = {
            "seeds": seeds,
            "final_accuracy": statistics.fmean(r["final_accuracy"] for r in rows),
            "bytes_up_total": statistics.fmean(r["bytes_up_total"] for r in rows),
            "payload_bytes_per_update": statistics.fmean(r["bytes_up_total"] / r["updates"] for r in rows),
            "delta_bytes_per_update": delta_bytes(enc, params, topk),
            "accuracy_by_round": np.mean([r["accuracy_by_round"] for r in rows], axis=0).tolist(),
            "cumulative_bytes_by_round": np.mean([r["cumulative_bytes_by_round"] for r in rows], axis=0).tolist(),
        }
    ref = out.get(REFERENCE)
    for row in out.values():
        if ref is not None:
            row["accuracy_cost_points"] = (ref["final_accuracy"] - row["final_accuracy"]) * 100
            row["payload_ratio"] = ref["bytes_up_total"] / row["bytes_up_total"]
            row["delta_ratio"] = ref["delta_bytes_per_update"] / row["delta_bytes_per_update"]
    return out


def judge(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target, by payload and by delta bytes: which encodings meet it."""
    verdicts = []
    for enc, ratio, cost in TARGETS:
        candidates = [e for e in summary if e != REFERENCE and (enc is None or e == enc)]
        row: dict[str, Any] = {"encoding": enc or "any", "min_ratio": ratio, "max_cost_points": cost}
        for measure in ("payload", "delta"):
            row[f"met_by_{measure}"] = [
                e
                for e in candidates
                if summary[e].get(f"{measure}_ratio", 0) >= ratio
                and summary[e].get("accuracy_cost_points", 1e9) <= cost
            ]
        verdicts.append(row)
    return verdicts


def print_table(summary: dict[str, dict[str, Any]], title: str) -> None:
    t = Table(title=title)
    for col in ("enc", "final acc %", "Δ vs f32 (pt)", "bytes up", "payload B/up", "× f32 payload"):
        t.add_column(col, justify="left" if col == "enc" else "right")
    t.add_column("delta B/up", justify="right")
    t.add_column("× f32 delta", justify="right")
    for enc, row in summary.items():
        t.add_row(
            enc,
            f"{row['final_accuracy'] * 100:.1f}",
            f"{0.0 - row.get('accuracy_cost_points', float('nan')) + 0.0:+.1f}",
            f"{row['bytes_up_total']:,.0f}",
            f"{row['payload_bytes_per_update']:,.0f}",
            f"{row.get('payload_ratio', float('nan')):.2f}",
            f"{row['delta_bytes_per_update']:,}",
            f"{row.get('delta_ratio', float('nan')):.2f}",
        )
    console.print(t)


def plot(summary: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against cumulative bytes up, one line per encoding (a point per round, mean over the seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    for enc, row in summary.items():
        ax.plot(row["cumulative_bytes_by_round"], np.asarray(row["accuracy_by_round"]) * 100, marker=".", label=enc)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative bytes up (MQTT payloads, all devices)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    rounds: Annotated[int, typer.Option(min=1, help="global rounds per run")] = 20,
    devices: Annotated[int, typer.Option(min=1)] = 50,
    gateways: Annotated[int, typer.Option(min=1)] = 5,
    alpha: Annotated[float, typer.Option(min=1e-6, help="Dirichlet α of the non-IID split")] = 0.5,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds, the same for every encoding")] = "0,1",
    dataset: Annotated[str, typer.Option()] = "digits",
    encodings: Annotated[str, typer.Option(help="comma-separated encodings; f32 is the reference")] = ",".join(
        ENCODINGS
    ),
    topk: Annotated[float, typer.Option(min=1e-6, max=1.0, help="topk: fraction of values each update keeps")] = 0.05,
    quick: Annotated[
        bool, typer.Option(help="smoke run: f32 and topk, 4 devices on 2 gateways, 1 round, seed 0")
    ] = False,
    out: Annotated[Path, typer.Option(help="directory for bytes.json, bytes.png and logs-bytes/")] = DEFAULT_OUT,
) -> None:
    """Run every encoding on the same seeds; print the table, write the JSON and the plot."""
    from flcore.encodings import parse_encodings

    if quick:
        rounds, devices, gateways, seeds, encodings = 1, 4, 2, "0", f"{REFERENCE},topk"
    try:
        enc_list = parse_encodings(encodings)
        seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if REFERENCE not in enc_list or not seed_list:
        raise typer.BadParameter(f"--encodings must include {REFERENCE} (the reference) and --seeds at least one")

    config = {"dataset": dataset, "devices": devices, "gateways": gateways, "alpha": alpha, "rounds": rounds}
    config |= {"seeds": list(seed_list), "encodings": list(enc_list), "topk": topk, "battery": False}
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs-bytes"
    logs.mkdir(exist_ok=True)
    json_path, png_path = out / "bytes.json", out / "bytes.png"
    title = f"{dataset}, {devices} devices / {gateways} gateways, α={alpha:g}, {rounds} rounds, topk {topk:g}"
    load = {"start": load_average()}
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    total = len(seed_list) * len(enc_list)
    for seed in seed_list:
        for enc in enc_list:
            row = run_one(enc, seed, config, logs)
            runs.append(row)
            acc = row["final_accuracy"]
            shown = (
                "FAILED: " + row.get("error", "") if acc is None else f"{acc * 100:.1f} %, {row['bytes_up_total']:,} B"
            )
            console.print(f"[{len(runs)}/{total}] {enc:5s} seed {seed}: {shown} in {row['seconds']:.0f} s")
            json_path.write_text(json.dumps({"config": config, "runs": runs}, indent=2))
    load["end"] = load_average()
    summary = summarize(runs, enc_list, topk)
    targets = judge(summary)
    seconds = round(time.monotonic() - started, 1)
    report = {"config": config, "load_average": load, "seconds": seconds, "summary": summary, "targets": targets}
    json_path.write_text(json.dumps({**report, "runs": runs}, indent=2))
    if summary:
        print_table(summary, title)
        plot(summary, png_path, title)
        for t in targets:
            console.print(
                f"target {t['encoding']} ≥ {t['min_ratio']}× fewer bytes at ≤ {t['max_cost_points']} pt: "
                f"payload {t['met_by_payload'] or 'not met'}, delta {t['met_by_delta'] or 'not met'}"
            )
    console.print(
        f"{len(runs)} runs in {seconds:.0f} s (load average {load['start']} → {load['end']}); wrote {json_path}"
    )
    if any(r["final_accuracy"] is None for r in runs):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
