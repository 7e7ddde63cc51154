"""Learning benchmark: how close each server optimizer gets to central training, and how fast, through the real stack.

Every cell is one ``iotfl demo --sim batched`` run (its own broker, cloud, gateways and a batched fleet over real
MQTT and HTTP) with ``--server-opt OPT``: by default 100 devices on 5 gateways, 20 % of them selected per round
(``--select 0.2``), the dataset's local training defaults (2 epochs), 50 rounds, batteries off, for datasets
{digits, har, sensors} × Dirichlet α {100, 0.5, 0.1} × optimizers {fedavg, fedavgm, fedadam, fedyogi} × seeds
{0, 1, 2}. Each optimizer runs with the server hyper-parameters of ``SERVER_PARAMS`` (tuned on digits and
har, see docs/learning.md) unless ``--server-lr`` and friends override them. A cell shows the final accuracy (mean ±
std over the seeds), the centralized accuracy the demo measures for the same seed (the same MLP trained on the pooled
data), and the rounds each run needs to reach 90 % of that centralized figure, and 90 % accuracy.

    python benchmarks/learning.py                               # the full grid (108 runs, see the README for time)
    python benchmarks/learning.py --datasets digits --alphas 0.5,0.1 --optimizers fedavg,fedadam --seeds 0
    python benchmarks/learning.py --quick                       # a smoke run: 10 devices, 3 rounds, two cells
    python benchmarks/learning.py --resume                      # keep the finished runs of an earlier grid

Writes ``learning.json``, ``learning.png`` (accuracy by round, one panel per dataset × α; matplotlib: ``pip install
'iotfl[bench]'``) and ``learning.md`` (the table, for docs to include) in ``--out``; each run's demo log and report
stay in ``--out/logs``. Exit code 1 when a run failed (its cell shows —).
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

DATASETS = ("digits", "har", "sensors")
ALPHAS = (100, 0.5, 0.1)
OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi")
# Server hyper-parameters per optimizer, as `iotfl demo` flags without the `--server-` prefix: the best of the
# in-process exploration on digits (docs/learning.md; 8 seeds, α 0.5 and 0.1, 50 rounds, 20 % of 100 devices), also
# the best or near it on har; sensors at α 0.1 wants gentler ones (docs/learning.md).
SERVER_PARAMS: dict[str, dict[str, float]] = {
    "fedavg": {"lr": 1.0},
    "fedavgm": {"lr": 1.5, "momentum": 0.7},
    "fedadam": {"lr": 0.03, "momentum": 0.8, "beta2": 0.99, "eps": 1e-3},
    "fedyogi": {"lr": 0.03, "momentum": 0.8, "beta2": 0.99, "eps": 1e-3},
}
# What `iotfl demo` does without the flag: such a value is not passed, so a demo without the flag runs the cell too.
DEMO_DEFAULTS = {"server-opt": "fedavg", "server-lr": 1.0, "select": 1.0}
TARGET = 0.9  # of the centralized accuracy
ABSOLUTE = 0.9  # test accuracy: the "reaches 90 %"
# The smoke run: datasets, alphas, optimizers, seeds (as the options spell them); rounds, devices, gateways, select.
QUICK_GRID = ("sensors", "0.5", "fedavg,fedadam", "0")
QUICK_SIZE = (3, 10, 2, 0.5)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# Seconds one demo run may take per round beyond a fixed start-up allowance, before it is stopped.
RUN_SECONDS_PER_ROUND = 30.0
RUN_STARTUP_SECONDS = 120.0

console = Console()


def server_params(opt: str, overrides: dict[str, float]) -> dict[str, float]:
    """``SERVER_PARAMS[opt]`` with ``overrides`` (``lr``, ``momentum``, ``beta2``, ``eps``); fedavg keeps η = 1."""
    if opt == "fedavg":
        return dict(SERVER_PARAMS[opt])
    return {**SERVER_PARAMS[opt], **overrides}


def demo_options(dataset: str, alpha: float, opt: str, seed: int, config: dict[str, Any]) -> list[str]:
    """The ``iotfl demo`` options of one run; the server flags only where they differ from the demo's default."""
    flags: dict[str, Any] = {"server-opt": opt, "select": config["select"]}
    flags |= {f"server-{k}": v for k, v in config["server_params"][opt].items()}
    return [
        *("--sim", "batched", "--devices", str(config["devices"]), "--gateways", str(config["gateways"])),
        *("--rounds", str(config["rounds"]), "--dataset", dataset, "--alpha", f"{alpha:g}", "--seed", str(seed)),
        *("--no-battery", "--round-timeout", f"{config['round_timeout']:g}"),
        *(x for k, v in flags.items() if DEMO_DEFAULTS.get(k) != v for x in (f"--{k}", str(v))),
    ]


def rounds_to(accuracies: list[float | None], target: float) -> int | None:
    """The first round (from 1) whose accuracy reaches ``target``; None when none does."""
    return next((i for i, a in enumerate(accuracies, 1) if a is not None and a >= target), None)


def run_cell(dataset: str, alpha: float, opt: str, seed: int, config: dict[str, Any], logs: Path) -> dict[str, Any]:
    """One ``iotfl demo`` run; its result row (``final_accuracy`` None when it failed)."""
    name = f"{dataset}_a{alpha:g}_{opt}_s{seed}"
    timeout = RUN_STARTUP_SECONDS + RUN_SECONDS_PER_ROUND * config["rounds"]
    started = time.monotonic()
    data, error = run_report(demo_options(dataset, alpha, opt, seed, config), name, logs, timeout)
    row: dict[str, Any] = {"dataset": dataset, "alpha": alpha, "optimizer": opt, "seed": seed}
    row |= {"seconds": round(time.monotonic() - started, 1), "final_accuracy": None}
    if data is None:
        return {**row, "error": error}
    accuracies = [r["accuracy"] for r in data["rounds"]]
    central = data["centralized_accuracy"]
    return {
        **row,
        "final_accuracy": data["final_accuracy"],
        "centralized_accuracy": central,
        "rounds_to_target": rounds_to(accuracies, TARGET * central),
        "rounds_to_90": rounds_to(accuracies, ABSOLUTE),
        "accuracy_by_round": accuracies,
    }


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, α, optimizer) over its seeds: final accuracy mean and sample std (0 for one seed),
    mean centralized accuracy, the mean gap (centralized − final, per seed), the rounds to 90 % of centralized and to
    90 % accuracy (each the mean over the seeds that reached it, ``reached`` / ``reached_90`` how many did) and the
    mean accuracy by round. A cell with a failed run has None figures."""
    cells: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["dataset"], r["alpha"], r["optimizer"]), []).append(r)
    rows = []
    for (dataset, alpha, opt), runs in cells.items():
        row: dict[str, Any] = {"dataset": dataset, "alpha": alpha, "optimizer": opt, "seeds": len(runs)}
        if any(r["final_accuracy"] is None for r in runs):
            empty = ("final", "std", "centralized", "gap", "rounds_to_target", "rounds_to_90")
            rows.append({**row, **dict.fromkeys(empty)})
            continue
        finals = [r["final_accuracy"] for r in runs]
        curves = [r["accuracy_by_round"] for r in runs]
        rows.append(
            {
                **row,
                "final": statistics.fmean(finals),
                "std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                "centralized": statistics.fmean(r["centralized_accuracy"] for r in runs),
                "gap": statistics.fmean(r["centralized_accuracy"] - r["final_accuracy"] for r in runs),
                **reach(runs, "rounds_to_target", "reached"),
                **reach(runs, "rounds_to_90", "reached_90"),
                "curve": [statistics.fmean(a for a in step if a is not None) for step in zip(*curves, strict=False)],
            }
        )
    return rows


def reach(runs: list[dict[str, Any]], key: str, count: str) -> dict[str, Any]:
    """``key``: the mean of the runs' rounds-to-target over the runs that reached it (None if none did); ``count``:
    how many did."""
    reached = [r[key] for r in runs if r.get(key) is not None]
    return {key: statistics.fmean(reached) if reached else None, count: len(reached)}


def reach_text(mean: float | None, reached: int, seeds: int, rounds: int) -> str:
    if mean is None:
        return f"> {rounds}"
    return f"{mean:.1f}" + (f" ({reached}/{seeds} seeds)" if reached < seeds else "")


def cell_texts(row: dict[str, Any], rounds: int) -> list[str]:
    """The table's figures of one summary row: final ± std, centralized, gap, rounds to 90 % of centralized and to
    90 % accuracy."""
    if row["final"] is None:
        return ["—"] * 5
    spread = f" ± {row['std'] * 100:.1f}" if row["seeds"] > 1 else ""
    return [
        f"{row['final'] * 100:.1f}{spread}",
        f"{row['centralized'] * 100:.1f}",
        f"{row['gap'] * 100:+.1f}",
        reach_text(row["rounds_to_target"], row["reached"], row["seeds"], rounds),
        reach_text(row["rounds_to_90"], row["reached_90"], row["seeds"], rounds),
    ]


HEADERS = (
    *("dataset", "α", "optimizer", "final %", "central %", "gap (pt)"),
    *("rounds to 90 % of central", "rounds to 90 %"),
)


def print_table(rows: list[dict[str, Any]], title: str, rounds: int) -> None:
    t = Table(title=title)
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("dataset", "optimizer") else "right")
    for row in rows:
        t.add_row(row["dataset"], f"{row['alpha']:g}", row["optimizer"], *cell_texts(row, rounds))
    console.print(t)


def markdown(rows: list[dict[str, Any]], title: str, rounds: int, params: dict[str, dict[str, float]]) -> str:
    """The table as markdown (for docs to include), under a line naming the setting and the server parameters."""
    lines = [f"{title}.", ""]
    lines += [f"Server parameters: {'; '.join(f'{o} ' + server_text(o, p) for o, p in params.items())}.", ""]
    lines += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        cells = [row["dataset"], f"{row['alpha']:g}", row["optimizer"], *cell_texts(row, rounds)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def server_text(opt: str, params: dict[str, float]) -> str:
    names = {"lr": "η", "momentum": "β" if opt == "fedavgm" else "β1", "beta2": "β2", "eps": "τ"}
    return ", ".join(f"{names[k]} = {v:g}" for k, v in params.items())


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Mean accuracy by round per optimizer, one panel per dataset × α, the centralized accuracy dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["dataset"], r["alpha"]) for r in rows))
    datasets = list(dict.fromkeys(d for d, _ in panels))
    alphas = list(dict.fromkeys(a for _, a in panels))
    fig, axes = plt.subplots(
        len(datasets), len(alphas), figsize=(4.2 * len(alphas), 3.2 * len(datasets)), squeeze=False, sharey="row"
    )
    for row in rows:
        ax = axes[datasets.index(row["dataset"])][alphas.index(row["alpha"])]
        if row["final"] is None:
            continue
        curve = [a * 100 for a in row["curve"]]
        ax.plot(range(1, len(curve) + 1), curve, label=row["optimizer"], linewidth=1.2)
    for (dataset, alpha), ax in ((p, axes[datasets.index(p[0])][alphas.index(p[1])]) for p in panels):
        central = [
            r["centralized"] for r in rows if (r["dataset"], r["alpha"]) == (dataset, alpha) and r["centralized"]
        ]
        if central:
            ax.axhline(statistics.fmean(central) * 100, color="black", linestyle="--", linewidth=0.8, label="central")
        ax.set_title(f"{dataset}, α = {alpha:g}", fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    if any(r["final"] is not None for r in rows):
        axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


Cell = tuple[str, float, str, int]  # dataset, α, optimizer, seed


def earlier_runs(path: Path, config: dict[str, Any]) -> dict[Cell, dict[str, Any]]:
    """The finished runs in an earlier ``learning.json`` at ``path`` whose config matches ``config``, each kept only
    when its optimizer ran with the same server parameters (so changing one optimizer's η reruns only that one)."""
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    old = dict(earlier.get("config", {}))
    old_params = old.pop("server_params", {})
    if old != {k: v for k, v in config.items() if k != "server_params"}:
        return {}
    return {
        (r["dataset"], r["alpha"], r["optimizer"], r["seed"]): r
        for r in earlier.get("results", [])
        if r["final_accuracy"] is not None
        and old_params.get(r["optimizer"]) == config["server_params"].get(r["optimizer"])
    }


def main(
    datasets: Annotated[str, typer.Option(help="comma-separated datasets")] = ",".join(DATASETS),
    alphas: Annotated[str, typer.Option(help="comma-separated Dirichlet α of the non-IID split")] = ",".join(
        map(str, ALPHAS)
    ),
    optimizers: Annotated[str, typer.Option(help="comma-separated server optimizers")] = ",".join(OPTIMIZERS),
    seeds: Annotated[str, typer.Option(help="comma-separated seeds: every cell runs once per seed")] = "0,1,2",
    rounds: Annotated[int, typer.Option(min=1, help="global rounds per run")] = 50,
    devices: Annotated[int, typer.Option(min=1)] = 100,
    gateways: Annotated[int, typer.Option(min=1)] = 5,
    select: Annotated[float, typer.Option(min=0.0, max=1.0, help="fraction of devices selected per round")] = 0.2,
    round_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="the demo's --round-timeout: bounds the wait for a gateway with nothing to post (the cloud "
            "closes such a round at this deadline + 10 s)",
        ),
    ] = 5.0,
    server_lr: Annotated[float | None, typer.Option(min=0.0, help="η of every optimizer but fedavg")] = None,
    server_momentum: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="β (fedavgm) / β1")] = None,
    server_beta2: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="β2 of fedadam, fedyogi")] = None,
    server_eps: Annotated[float | None, typer.Option(min=0.0, help="τ of fedadam, fedyogi")] = None,
    quick: Annotated[
        bool, typer.Option(help="smoke run: sensors, α 0.5, fedavg and fedadam, 10 devices, 3 rounds")
    ] = False,
    out: Annotated[Path, typer.Option(help="directory for learning.json, .png, .md and logs/")] = DEFAULT_OUT,
    resume: Annotated[bool, typer.Option(help="reuse finished runs of an earlier grid with the same config")] = False,
) -> None:
    """Run the grid and write the table (JSON, markdown) and the plot (PNG)."""
    from iotfl.datasets import NAMES

    if quick:
        (datasets, alphas, optimizers, seeds), (rounds, devices, gateways, select) = QUICK_GRID, QUICK_SIZE
    dataset_list = comma_list(datasets, str, "--datasets")
    opt_list = comma_list(optimizers, str, "--optimizers")
    for option, given, known in (("--datasets", dataset_list, NAMES), ("--optimizers", opt_list, OPTIMIZERS)):
        unknown = [g for g in given if g not in known and not (option == "--datasets" and g.startswith("csv:"))]
        if unknown:
            raise typer.BadParameter(f"{option}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    alpha_list = comma_list(alphas, float, "--alphas")
    if any(a <= 0 for a in alpha_list):
        raise typer.BadParameter(f"--alphas must be > 0, got {alphas!r}")
    seed_list = comma_list(seeds, int, "--seeds")
    asked = {"lr": server_lr, "momentum": server_momentum, "beta2": server_beta2, "eps": server_eps}
    overrides = {k: v for k, v in asked.items() if v is not None}

    params = {o: server_params(o, overrides) for o in opt_list}
    config: dict[str, Any] = {"devices": devices, "gateways": gateways, "rounds": rounds, "select": select}
    config |= {"battery": False, "sim": "batched", "round_timeout": round_timeout, "server_params": params}
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    json_path, png_path, md_path = out / "learning.json", out / "learning.png", out / "learning.md"
    done = earlier_runs(json_path, config) if resume else {}

    title = (
        f"{devices} devices / {gateways} gateways, {select * 100:g} % per round, {rounds} rounds, batched fleet, "
        f"seeds {', '.join(map(str, seed_list))}"
    )
    runs = [(d, a, o, s) for d in dataset_list for a in alpha_list for o in opt_list for s in seed_list]
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    for i, (d, a, o, s) in enumerate(runs, 1):
        row = done.get((d, a, o, s)) or run_cell(d, a, o, s, config, logs)
        results.append(row)
        acc = row["final_accuracy"]
        shown = "FAILED: " + row.get("error", "") if acc is None else f"{acc * 100:.1f} %"
        reused = " (from the earlier run)" if (d, a, o, s) in done else f" in {row['seconds']:.0f} s"
        console.print(f"[{i}/{len(runs)}] {d:8s} α={a:<5g} {o:8s} seed {s} {shown}{reused}")
        # every run is kept at once, so an interrupted grid resumes where it stopped
        json_path.write_text(json.dumps({"config": config, "summary": summarize(results), "results": results}))

    summary = summarize(results)
    print_table(summary, title, rounds)
    md_path.write_text(markdown(summary, title, rounds, params))
    plot(summary, png_path, title)
    console.print(f"{len(runs)} runs in {time.monotonic() - started:.0f} s; wrote {json_path}, {md_path}, {png_path}")
    if any(r["final_accuracy"] is None for r in results):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
