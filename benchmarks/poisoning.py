"""Poisoning benchmark: final accuracy of each aggregation rule under each attack, through the real stack.

Every cell is one ``iotfl demo`` run (its own mosquitto, cloud, gateways and simulated fleet, all over real MQTT
and HTTP) with ``--aggregation RULE --attack KIND:PCT`` — the rule runs at the gateways and at the cloud. The
default grid is digits, 50 devices on 5 gateways, Dirichlet α = 0.5, batteries off (every device that can train
does, every round), rules {fedavg, clip, trimmed-mean, median, krum} × attacks {none, sign-flip, scale10,
label-flip} × {10 %, 20 %} attackers (``none`` once per rule), each cell once per ``--seeds`` seed (the seed
draws the split, the attackers, the initial model and the shuffles); a cell shows the mean ± std over the seeds and
its mean difference to the clean FedAvg run of the same seeds.

    python benchmarks/poisoning.py                      # the full grid (~35 runs), table + JSON + PNG
    python benchmarks/poisoning.py --seeds 0,1,2        # every cell over three seeds
    python benchmarks/poisoning.py --quick              # a smoke run: 2 rules × sign-flip:20%, 10 devices, 2 rounds
    python benchmarks/poisoning.py --resume             # keep the finished cells of an earlier run with that config

Writes ``poisoning.json`` and ``poisoning.png`` (matplotlib: ``pip install 'iotfl[bench]'``) in ``--out``; each
run's demo log stays in ``--out/logs``. Exit code 1 when a run failed (its cell is null).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

try:
    from benchmarks.demo_run import run_demo
except ModuleNotFoundError:  # run as a script (`python benchmarks/NAME.py`): this folder is on sys.path
    from demo_run import run_demo  # type: ignore[no-redef]


RULES = ("fedavg", "clip", "trimmed-mean", "median", "krum")
ATTACKS = ("sign-flip", "scale10", "label-flip")
PCTS = (10, 20)
QUICK_RULES = ("fedavg", "median")
QUICK_ATTACKS = ("sign-flip",)
QUICK_PCTS = (20,)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# Seconds one demo run may take per round beyond a fixed start-up allowance, before it is stopped.
RUN_SECONDS_PER_ROUND = 30.0
RUN_STARTUP_SECONDS = 120.0

console = Console()


@dataclass(frozen=True)
class Cell:
    """One run of the grid: ``attack`` is None for the clean run."""

    rule: str
    attack: str | None
    pct: int

    @property
    def column(self) -> str:
        return "none" if self.attack is None else f"{self.attack}:{self.pct}%"


def grid(rules: tuple[str, ...], attacks: tuple[str, ...], pcts: tuple[int, ...], clean: bool = True) -> list[Cell]:
    """Per rule: the clean run (unless not ``clean``), then each attack at each share of attackers."""
    cells = []
    for rule in rules:
        if clean:
            cells.append(Cell(rule, None, 0))
        cells.extend(Cell(rule, a, p) for a in attacks for p in pcts)
    return cells


def run_cell(cell: Cell, seed: int, config: dict[str, Any], logs: Path) -> dict[str, Any]:
    """One ``iotfl demo`` run; its result row (``final_accuracy`` None when it failed)."""
    name = f"{cell.rule}_{cell.column.replace(':', '_').replace('%', '')}_s{seed}"
    report = logs / f"{name}.json"
    report.unlink(missing_ok=True)
    options = [
        *("--devices", str(config["devices"]), "--gateways", str(config["gateways"])),
        *("--rounds", str(config["rounds"]), "--alpha", str(config["alpha"]), "--seed", str(seed)),
        *("--dataset", config["dataset"], "--no-battery", "--aggregation", cell.rule, "--json", str(report)),
        *("--clip-norm", str(config["clip_norm"]), "--trim", str(config["trim"]), "--krum-f", str(config["krum_f"])),
        *(["--attack", cell.column] if cell.attack else []),
    ]
    timeout = RUN_STARTUP_SECONDS + RUN_SECONDS_PER_ROUND * config["rounds"]
    started = time.monotonic()
    code = run_demo(options, logs / f"{name}.log", timeout)
    seconds = round(time.monotonic() - started, 1)
    row: dict[str, Any] = {**asdict(cell), "column": cell.column, "seed": seed, "seconds": seconds}
    row["final_accuracy"] = None
    if code != 0 or not report.exists():
        row["error"] = f"demo exited with {code}" if code != -1 else f"timed out after {timeout:.0f} s"
        return row
    data = json.loads(report.read_text())
    row["final_accuracy"] = data["final_accuracy"]
    row["accuracy_by_round"] = [r["accuracy"] for r in data["rounds"]]
    row["attackers"] = len(data.get("fleet", {}).get("attackers", []))
    row["centralized_accuracy"] = data["centralized_accuracy"]
    return row


Summary = dict[str, dict[str, float | None]]


def summarize(results: list[dict[str, Any]]) -> dict[str, Summary]:
    """rule → column → a statistic over the seeds: ``table`` the mean final accuracy, ``std`` its sample standard
    deviation (0 for one seed), ``vs_clean`` the mean of (this run − the clean FedAvg run of the same seed) over the
    seeds that have both. A cell with a failed run is None in all three."""
    runs: dict[tuple[str, str], dict[int, float | None]] = {}
    for r in results:
        runs.setdefault((r["rule"], r["column"]), {})[r["seed"]] = r["final_accuracy"]
    clean = runs.get(("fedavg", "none"), {})
    out: dict[str, Summary] = {"table": {}, "std": {}, "vs_clean": {}}
    for (rule, column), by_seed in runs.items():
        accs = {s: a for s, a in by_seed.items() if a is not None}
        ok = len(accs) == len(by_seed)
        paired = [a - c for s, a in accs.items() if (c := clean.get(s)) is not None]
        values = list(accs.values())
        out["table"].setdefault(rule, {})[column] = statistics.fmean(values) if ok else None
        out["std"].setdefault(rule, {})[column] = (statistics.stdev(values) if len(values) > 1 else 0.0) if ok else None
        out["vs_clean"].setdefault(rule, {})[column] = statistics.fmean(paired) if ok and paired else None
    return out


def print_table(summary: dict[str, Summary], columns: list[str], title: str, seeds: int) -> None:
    t = Table(title=title)
    t.add_column("rule")
    for c in columns:
        t.add_column(c, justify="right")
    for rule, row in summary["table"].items():
        cells = []
        for c in columns:
            acc, std, diff = row.get(c), summary["std"][rule].get(c), summary["vs_clean"][rule].get(c)
            if acc is None:
                cells.append("—")
                continue
            spread = f" ± {std * 100:.1f}" if seeds > 1 and std is not None else ""
            mark = "" if diff is None or (rule, c) == ("fedavg", "none") else f" ({diff * 100:+.1f})"
            cells.append(f"{acc * 100:.1f}{spread}{mark}")
        t.add_row(rule, *cells)
    console.print(t)
    over = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    console.print(f"final accuracy in %, {over}; (±points) against the clean FedAvg run of the same seeds")


def plot(summary: dict[str, Summary], columns: list[str], path: Path, title: str) -> None:
    """Grouped bars: one group per attack column, one bar per rule (the mean, with the std as an error bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, std = summary["table"], summary["std"]
    rules = list(table)
    width = 0.8 / max(len(rules), 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.4 * len(columns) + 3), 4.5))
    for i, rule in enumerate(rules):
        xs = [j + (i - (len(rules) - 1) / 2) * width for j in range(len(columns))]
        values = [(table[rule].get(c) or 0.0) * 100 for c in columns]
        errors = [(std[rule].get(c) or 0.0) * 100 for c in columns]
        ax.bar(xs, values, width, yerr=errors, capsize=2, label=rule)
    clean = table.get("fedavg", {}).get("none")
    if clean is not None:
        ax.axhline(clean * 100, color="black", linestyle="--", linewidth=0.8, label="clean FedAvg")
    ax.set_xticks(range(len(columns)), columns, rotation=20)
    ax.set_ylabel("final accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))  # beside the bars, never over one
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(
    rounds: Annotated[int, typer.Option(min=1, help="global rounds per run")] = 15,
    devices: Annotated[int, typer.Option(min=1)] = 50,
    gateways: Annotated[int, typer.Option(min=1)] = 5,
    alpha: Annotated[float, typer.Option(min=1e-6, help="Dirichlet α of the non-IID split")] = 0.5,
    seeds: Annotated[str, typer.Option(help="comma-separated seeds: every cell runs once per seed")] = "0",
    dataset: Annotated[str, typer.Option()] = "digits",
    rules: Annotated[str, typer.Option(help="comma-separated rules")] = ",".join(RULES),
    attacks: Annotated[str, typer.Option(help="comma-separated attack kinds")] = ",".join(ATTACKS),
    pcts: Annotated[str, typer.Option(help="comma-separated attacker shares in %")] = ",".join(map(str, PCTS)),
    clip_norm: Annotated[float, typer.Option(help="clip's bound (0 = the round's median norm)")] = 0.0,
    trim: Annotated[float, typer.Option(help="trimmed-mean's fraction cut at each end")] = 0.2,
    krum_f: Annotated[float, typer.Option(help="krum's assumed fraction of attackers")] = 0.2,
    quick: Annotated[
        bool, typer.Option(help="smoke run: fedavg and median × sign-flip:20% (no clean run), 10 devices, 2 rounds")
    ] = False,
    out: Annotated[Path, typer.Option(help="directory for poisoning.json, poisoning.png and logs/")] = DEFAULT_OUT,
    resume: Annotated[bool, typer.Option(help="reuse finished cells of an earlier run with the same config")] = False,
) -> None:
    """Run the grid and write the table (JSON) and the plot (PNG)."""
    from device_sim.attack import KINDS
    from flcore.robust import RULE_NAMES

    if quick:
        rounds, devices, gateways = 2, 10, 2
        rules, attacks, pcts = ",".join(QUICK_RULES), ",".join(QUICK_ATTACKS), ",".join(map(str, QUICK_PCTS))
    rule_list = tuple(r.strip() for r in rules.split(",") if r.strip())
    attack_list = tuple(a.strip() for a in attacks.split(",") if a.strip())
    try:
        pct_list = tuple(int(p) for p in pcts.split(",") if p.strip())
    except ValueError:
        raise typer.BadParameter(f"--pcts must be whole percentages, got {pcts!r}") from None
    for name, given, known in (("rule", rule_list, RULE_NAMES), ("attack", attack_list, KINDS)):
        unknown = [g for g in given if g not in known]
        if unknown or not given:
            raise typer.BadParameter(f"unknown or no {name}s {unknown}; known: {', '.join(known)}")
    if not pct_list or any(not 0 < p <= 100 for p in pct_list):
        raise typer.BadParameter(f"--pcts must be in 1..100, got {pcts!r}")
    try:
        seed_list = list(dict.fromkeys(int(s) for s in seeds.split(",") if s.strip()))
    except ValueError:
        raise typer.BadParameter(f"--seeds must be whole numbers, got {seeds!r}") from None
    if not seed_list:
        raise typer.BadParameter("--seeds needs at least one seed")

    config = {"dataset": dataset, "devices": devices, "gateways": gateways, "alpha": alpha, "rounds": rounds}
    config |= {"seeds": seed_list, "battery": False, "clip_norm": clip_norm, "trim": trim, "krum_f": krum_f}
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    json_path, png_path = out / "poisoning.json", out / "poisoning.png"
    done: dict[str, dict[str, Any]] = {}
    if resume and json_path.exists():
        earlier = json.loads(json_path.read_text())
        # a run is keyed by its seed, so an earlier run with other seeds still lends the ones both have
        if {**earlier.get("config", {}), "seeds": seed_list} == config:
            done = {
                f"{r['rule']} {r['column']} {r['seed']}": r
                for r in earlier["results"]
                if r["final_accuracy"] is not None
            }

    cells = grid(rule_list, attack_list, pct_list, clean=not quick)
    columns = list(dict.fromkeys(c.column for c in cells))
    seeded = ", ".join(map(str, seed_list))
    title = f"{dataset}, {devices} devices / {gateways} gateways, α={alpha:g}, {rounds} rounds, seeds {seeded}"
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    runs = [(cell, s) for cell in cells for s in seed_list]
    for i, (cell, s) in enumerate(runs, 1):
        key = f"{cell.rule} {cell.column} {s}"
        row = done.get(key) or run_cell(cell, s, config, logs)
        results.append(row)
        acc = row["final_accuracy"]
        shown = "FAILED: " + row.get("error", "") if acc is None else f"{acc * 100:.1f} %"
        reused = " (from the earlier run)" if key in done else f" in {row['seconds']:.0f} s"
        console.print(f"[{i}/{len(runs)}] {cell.rule:12s} {cell.column:15s} seed {s} {shown}{reused}")
        report = {"config": config, "columns": columns, **summarize(results), "results": results}
        json_path.write_text(json.dumps(report, indent=2))

    summary = summarize(results)
    print_table(summary, columns, title, len(seed_list))
    plot(summary, columns, png_path, title)
    console.print(f"{len(runs)} runs in {time.monotonic() - started:.0f} s; wrote {json_path} and {png_path}")
    if any(r["final_accuracy"] is None for r in results):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
