"""Batched simulation benchmark: 10,000 device updates per round end to end, and accuracy against per-device mode.

Three ``iotfl demo`` runs in one go (each its own mosquitto, cloud, 5 gateways and fleet over real MQTT and HTTP),
batteries off so every device that can train does, every round:

1. ``scale``: ``--sim batched`` with 10,000 devices that all fit the model (``IOTFL_RAM_MIX={"class2": 1}``),
   3 rounds: updates (k) and wall seconds per round, and how long the fleet took to train and publish them;
2. ``device``: the anchor, per-device mode (a connection and a training per device), 100 devices, 10 rounds;
3. ``batched``: the same 100 devices, seed and data in batched mode, 10 rounds.

Figures as ratios within the run: batched updates/s over per-device updates/s (2 → 1), and the accuracy of 3 minus
that of 2 (target ±1 point). The absolute target, a round of 10,000 updates in ≤ 30 s, depends on the machine's
load, so the load average is recorded with the figures.

    python benchmarks/batched.py            # ~4 min on 2 cores
    python benchmarks/batched.py --quick    # smoke run: 200 devices / 1 round; 10 devices / 1 round per mode

Writes ``batched.json`` in ``--out`` (default benchmarks/results/); each demo's log stays in ``--out/logs``.
Exit code 1 when a run failed.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

try:
    from benchmarks.demo_run import demo_env, run_demo
except ModuleNotFoundError:  # run as a script (`python benchmarks/NAME.py`): this folder is on sys.path
    from demo_run import demo_env, run_demo  # type: ignore[no-redef]


DEFAULT_OUT = Path(__file__).resolve().parent / "results"
TARGET_ROUND_SECONDS = 30.0
TARGET_ACCURACY_POINTS = 1.0
RUN_STARTUP_SECONDS = 240.0  # a 10,000-device fleet splits its data and announces every device first
RUN_SECONDS_PER_ROUND = 60.0
# device_sim.batch_fleet logs "round 3: 2000 updates published in 1.93 s (gw0)" per batch of tasks
PUBLISHED = re.compile(r"round (\d+): (\d+) updates published in ([0-9.]+) s")

console = Console(width=120)


def run_one(name: str, config: dict[str, Any], sim: str, devices: int, rounds: int, logs: Path) -> dict[str, Any]:
    """One ``iotfl demo`` run; its result row (``error`` set when it failed)."""
    report = logs / f"{name}.json"
    report.unlink(missing_ok=True)
    options = [
        *("--sim", sim, "--devices", str(devices)),
        *("--gateways", str(config["gateways"]), "--rounds", str(rounds), "--seed", str(config["seed"])),
        *("--dataset", config["dataset"], "--alpha", str(config["alpha"]), "--no-battery", "--json", str(report)),
    ]
    # every device can train the model at scale: k = devices
    env = demo_env(IOTFL_RAM_MIX=json.dumps({"class2": 1.0})) if name == "scale" else demo_env()
    timeout = RUN_STARTUP_SECONDS + RUN_SECONDS_PER_ROUND * rounds
    started = time.monotonic()
    row: dict[str, Any] = {"name": name, "sim": sim, "devices": devices, "rounds": rounds}
    published: list[tuple[str, str, str]] = []

    def read_fleet_log(workdir: Path) -> None:
        fleet_log = workdir / "fleet.log"
        if fleet_log.exists():
            published.extend(PUBLISHED.findall(fleet_log.read_text(errors="replace")))

    code = run_demo(options, logs / f"{name}.log", timeout, env=env, on_workdir=read_fleet_log)
    row["wall_seconds"] = round(time.monotonic() - started, 1)
    if code != 0 or not report.exists():
        row["error"] = f"demo exited with {code}" if code != -1 else f"timed out after {timeout:.0f} s"
        return row
    data = json.loads(report.read_text())
    per_round = data["rounds"]
    fleet_seconds: dict[int, float] = {}
    for rnd, _count, seconds in published:  # one line per gateway's task; they overlap little, so add them up
        fleet_seconds[int(rnd)] = fleet_seconds.get(int(rnd), 0.0) + float(seconds)
    row["rounds_detail"] = [
        {
            "round": r["round"],
            "k": r["k"],
            "seconds": r["seconds"],
            "accuracy": r["accuracy"],
            **({"fleet_seconds": round(fleet_seconds[r["round"]], 3)} if r["round"] in fleet_seconds else {}),
        }
        for r in per_round
    ]
    seconds = [r["seconds"] for r in per_round]
    row["median_round_seconds"] = round(statistics.median(seconds), 3)
    row["median_k"] = statistics.median(r["k"] for r in per_round)
    row["updates_per_second"] = round(sum(r["k"] for r in per_round) / sum(seconds), 1)
    row["final_accuracy"] = data["final_accuracy"]
    return row


def print_table(results: dict[str, dict[str, Any]], ratios: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    for col in ("run", "mode", "devices", "rounds", "k / round", "s / round (median)", "updates/s", "accuracy"):
        table.add_column(col, justify="left" if col in ("run", "mode") else "right")
    for name, r in results.items():
        if "error" in r:
            table.add_row(name, r["sim"], str(r["devices"]), str(r["rounds"]), "—", "—", "—", f"FAILED: {r['error']}")
            continue
        table.add_row(
            name,
            r["sim"],
            f"{r['devices']:,}",
            str(r["rounds"]),
            f"{r['median_k']:,.0f}",
            f"{r['median_round_seconds']:.1f}",
            f"{r['updates_per_second']:,.0f}",
            f"{r['final_accuracy'] * 100:.1f} %",
        )
    console.print(table)
    figures = Table(title="figures (ratios within this run) against the targets")
    for col in ("figure", "measured", "target", "met"):
        figures.add_column(col)
    for name, (_value, value, target, met) in ratios.items():
        figures.add_row(name, value, target, "[green]yes[/]" if met else "[red]no[/]" if met is False else "—")
    console.print(figures)


def main(
    devices: Annotated[int, typer.Option(min=1, help="devices of the scale run")] = 10_000,
    rounds: Annotated[int, typer.Option(min=1, help="rounds of the scale run")] = 3,
    compare_devices: Annotated[int, typer.Option(min=1, help="devices of the accuracy comparison")] = 100,
    compare_rounds: Annotated[int, typer.Option(min=1, help="rounds of the accuracy comparison")] = 10,
    gateways: Annotated[int, typer.Option(min=1)] = 5,
    alpha: Annotated[float, typer.Option(min=1e-6, help="Dirichlet α of the non-IID split")] = 0.5,
    seed: Annotated[int, typer.Option()] = 0,
    dataset: Annotated[str, typer.Option()] = "digits",
    quick: Annotated[
        bool, typer.Option(help="smoke run: 200 devices / 1 round; the comparison with 10 devices / 1 round")
    ] = False,
    out: Annotated[Path, typer.Option(help="directory for batched.json and logs/")] = DEFAULT_OUT,
) -> None:
    """Run the scale run and the per-device / batched comparison; print the table and write batched.json."""
    if quick:
        devices, rounds, compare_devices, compare_rounds, gateways = 200, 1, 10, 1, 2
    config = {"dataset": dataset, "gateways": gateways, "alpha": alpha, "seed": seed, "battery": False}
    config |= {"devices": devices, "rounds": rounds, "compare_devices": compare_devices}
    config["compare_rounds"] = compare_rounds
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    load_before = os.getloadavg()
    started = time.monotonic()
    plan = [
        ("scale", "batched", devices, rounds),
        ("device", "device", compare_devices, compare_rounds),
        ("batched", "batched", compare_devices, compare_rounds),
    ]
    results: dict[str, dict[str, Any]] = {}
    for name, sim, n, r in plan:
        console.print(f"running {name}: --sim {sim}, {n:,} devices, {r} rounds …")
        row = run_one(name, config, sim, n, r, logs)
        if "error" in row:  # e.g. a port taken between the demo's free_port() and its bind on a busy machine
            console.print(f"{name} failed ({row['error']}); once more")
            row = {**run_one(name, config, sim, n, r, logs), "first_attempt": row["error"]}
        results[name] = row
    scale, anchor, twin = results["scale"], results["device"], results["batched"]
    ratios: dict[str, Any] = {}
    if "error" not in scale:
        ok = scale["median_round_seconds"] <= TARGET_ROUND_SECONDS and scale["median_k"] >= devices
        ratios["scale: k per round, median s per round"] = (
            scale["median_round_seconds"],
            f"{scale['median_k']:,.0f} in {scale['median_round_seconds']:.1f} s",
            f"{devices:,} in ≤ {TARGET_ROUND_SECONDS:.0f} s",
            ok,
        )
    if "error" not in scale and "error" not in anchor:
        speedup = scale["updates_per_second"] / anchor["updates_per_second"]
        ratios["updates/s: batched scale ÷ per-device anchor"] = (round(speedup, 2), f"{speedup:.1f}×", "—", None)
    if "error" not in anchor and "error" not in twin:
        points = (twin["final_accuracy"] - anchor["final_accuracy"]) * 100
        ratios["accuracy: batched − per-device (points)"] = (
            round(points, 2),
            f"{points:+.1f}",
            f"±{TARGET_ACCURACY_POINTS:.0f}",
            abs(points) <= TARGET_ACCURACY_POINTS,
        )
    load_after = os.getloadavg()
    report = {
        "config": config,
        "results": results,
        "figures": {
            k: {"value": v, "measured": shown, "target": t, "met": m} for k, (v, shown, t, m) in ratios.items()
        },
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "cpus": os.cpu_count(),
        "seconds": round(time.monotonic() - started, 1),
    }
    json_path = out / "batched.json"
    json_path.write_text(json.dumps(report, indent=2))
    print_table(results, ratios, f"{dataset}, {gateways} gateways, α={alpha:g}, batteries off")
    console.print(
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs); "
        f"{report['seconds']:.0f} s in all; wrote {json_path}"
    )
    if any("error" in r for r in results.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
