"""Heterogeneous device models (HeteroFL width slicing) against excluding the devices too small for the model.

Three fleets through the real stack (``iotfl demo --sim batched``: mosquitto, cloud, gateways and a batched fleet
over real MQTT and HTTP), each once per seed, on digits (MLP 64 → 32 → 10, 100 devices of ~14 samples each):

- ``sliced``: 40 % of the devices limited to half width: class2 devices told by the task to train the half-width
  sub-model (``--widths class2=0.5``: 64 → 16 → 10), 60 % constrained devices training the whole model;
- ``excluded``: the same 40 % (the RAM classes go to the same devices) sit out: class0, which never trains;
- ``all-full``: every device trains the whole model (the reference).

Each fleet runs in two placements of the RAM classes: ``random`` (independent of the data: the small devices see
what the others see) and ``by-data`` (``--ram-follows-data``: the devices that mostly see the lowest labels are
the small ones, as when one kind of hardware is deployed where one kind of activity happens).

    python benchmarks/hetero.py                 # 2 placements × 3 fleets × 3 seeds, ~9 min on 2 cores
    python benchmarks/hetero.py --quick         # smoke run: 10 devices, 2 rounds, one seed

Prints a table (final accuracy mean ± std, updates counted per round by width) and writes ``hetero.json`` in
``--out`` (default ``benchmarks/results/``), the demos' logs in ``--out/logs``. Exit code 1 when a run failed.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

try:
    from benchmarks.demo_run import comma_list, run_report
except ModuleNotFoundError:  # run as a script (`python benchmarks/NAME.py`): this folder is on sys.path
    from demo_run import comma_list, run_report  # type: ignore[no-redef]

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
FLEETS: dict[str, list[str]] = {
    "sliced": ["--ram-mix", "class2=0.4,constrained=0.6", "--widths", "class2=0.5"],
    "excluded": ["--ram-mix", "class0=0.4,constrained=0.6"],
    "all-full": ["--ram-mix", "constrained=1"],
}
PLACEMENTS: dict[str, list[str]] = {"random": [], "by-data": ["--ram-follows-data"]}
console = Console()


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std of the final accuracy over a fleet's runs, and the mean updates counted per round by width."""
    finals = [r["final_accuracy"] for r in runs]
    by_width: dict[str, list[float]] = {}
    for r in runs:
        rounds = r["k_by_width"]
        for width in {w for per in rounds for w in per}:
            by_width.setdefault(width, []).append(statistics.fmean(per.get(width, 0) for per in rounds))
    return {
        "final_mean": statistics.fmean(finals),
        "final_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
        "k_mean": statistics.fmean(statistics.fmean(r["k"]) for r in runs),
        "k_by_width_mean": {w: statistics.fmean(v) for w, v in sorted(by_width.items())},
        "all_counted": all(r["all_counted"] for r in runs),
    }


def one_run(report: dict[str, Any], seed: int, seconds: float) -> dict[str, Any]:
    """What a fleet's run contributes: accuracy by round, cloud k per round and the accepted updates by width."""
    widths = report.get("widths")
    rounds = report["rounds"]
    return {
        "seed": seed,
        "seconds": round(seconds, 1),
        "final_accuracy": report["final_accuracy"],
        "centralized_accuracy": report["centralized_accuracy"],
        "accuracy_by_round": [r["accuracy"] for r in rounds],
        "k": [r["k"] for r in rounds],
        # Without --widths every update that trained is whole: all of k.
        "k_by_width": [p["accepted_by_width"] for p in widths["per_round"]]
        if widths
        else [{"1": r["k"]} for r in rounds],
        "all_counted": widths["all_counted"] if widths else True,
    }


def print_table(summary: dict[str, dict[str, Any]], title: str) -> None:
    table = Table(title=title)
    for column in ("placement / fleet", "final accuracy", "k per round", "counted by width", "all counted"):
        table.add_column(column, justify="right")
    for cell, s in summary.items():
        widths = ", ".join(f"{n:.1f} at {w}" for w, n in s["k_by_width_mean"].items())
        final = f"{s['final_mean'] * 100:.1f} ± {s['final_std'] * 100:.1f} %"
        table.add_row(cell, final, f"{s['k_mean']:.1f}", widths, str(s["all_counted"]))
    console.print(table)
    for place in PLACEMENTS:
        sliced, excluded = summary.get(f"{place}/sliced"), summary.get(f"{place}/excluded")
        if sliced and excluded:
            gain = (sliced["final_mean"] - excluded["final_mean"]) * 100
            console.print(f"{place}: sliced vs excluded {gain:+.1f} points")


def main(
    rounds: Annotated[int, typer.Option(min=1, help="global rounds per run")] = 30,
    devices: Annotated[int, typer.Option(min=1)] = 100,
    gateways: Annotated[int, typer.Option(min=1)] = 5,
    alpha: Annotated[float, typer.Option(min=1e-6, help="Dirichlet α of the split")] = 0.5,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds")] = "0,1,2",
    dataset: Annotated[str, typer.Option()] = "digits",
    quick: Annotated[bool, typer.Option(help="smoke run: 10 devices on 2 gateways, 2 rounds, seed 0")] = False,
    out: Annotated[Path, typer.Option(help="directory for hetero.json and logs/")] = DEFAULT_OUT,
) -> None:
    """Run the three fleets per seed; print and write the table."""
    seed_list = comma_list(seeds, int, "--seeds")
    if quick:
        rounds, devices, gateways, seed_list = 2, 10, 2, [0]
    config = {"dataset": dataset, "devices": devices, "gateways": gateways, "alpha": alpha, "rounds": rounds}
    config |= {"seeds": seed_list, "fleets": FLEETS, "sim": "batched", "battery": False}
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    cells = [(place, name) for place in PLACEMENTS for name in FLEETS]
    results: dict[str, list[dict[str, Any]]] = {f"{place}/{name}": [] for place, name in cells}
    failed = []
    for seed in seed_list:
        for place, name in cells:
            options = [
                *("--sim", "batched", "--devices", str(devices), "--gateways", str(gateways), "--rounds", str(rounds)),
                *("--alpha", str(alpha), "--seed", str(seed), "--dataset", dataset, "--no-battery"),
                *FLEETS[name],
                *PLACEMENTS[place],
            ]
            started = time.monotonic()
            report, error = run_report(options, f"hetero-{place}-{name}-s{seed}", logs, 120 + 30 * rounds)
            if report is None:
                console.print(f"[bold red]{place}/{name} seed {seed}: {error}[/]")
                failed.append((place, name, seed))
                continue
            run = one_run(report, seed, time.monotonic() - started)
            results[f"{place}/{name}"].append(run)
            console.print(
                f"{place:7} {name:9} seed {seed}: {run['final_accuracy'] * 100:.1f} % in {run['seconds']:.0f} s"
            )
    summary = {cell: summarize(runs) for cell, runs in results.items() if runs}
    print_table(summary, f"{dataset}, {devices} devices, α = {alpha}, {rounds} rounds, seeds {seed_list}")
    path = out / "hetero.json"
    path.write_text(json.dumps({"config": config, "summary": summary, "results": results}, indent=2))
    console.print(f"wrote {path}")
    if failed:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
