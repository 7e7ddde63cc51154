"""Poisoning benchmark: final accuracy of each aggregation rule under each attack, through the real stack.

Every cell is one ``iotfl demo`` run (its own mosquitto, cloud, gateways and simulated fleet, all over real MQTT
and HTTP) with ``--aggregation RULE --attack KIND:PCT`` — the rule runs at the gateways and at the cloud. The
default grid is digits, 50 devices on 5 gateways, Dirichlet α = 0.5, batteries off (every device that can train
does, every round), rules {fedavg, clip, trimmed-mean, median, krum} × attacks {none, sign-flip, scale10,
label-flip} × {10 %, 20 %} attackers (``none`` once per rule).

    python benchmarks/poisoning.py                      # the full grid (~35 runs), table + JSON + PNG
    python benchmarks/poisoning.py --quick              # a smoke run: 2 rules × sign-flip:20%, 10 devices, 2 rounds
    python benchmarks/poisoning.py --resume             # keep the finished cells of an earlier run with that config

Writes ``poisoning.json`` and ``poisoning.png`` (matplotlib: ``pip install 'iotfl[bench]'``) in ``--out``; each
run's demo log stays in ``--out/logs``. Exit code 1 when a run failed (its cell is null).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

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


def run_cell(cell: Cell, config: dict[str, Any], logs: Path) -> dict[str, Any]:
    """One ``iotfl demo`` run; its result row (``final_accuracy`` None when it failed)."""
    name = f"{cell.rule}_{cell.column.replace(':', '_').replace('%', '')}"
    report = logs / f"{name}.json"
    report.unlink(missing_ok=True)
    args = [
        sys.executable,
        "-m",
        "iotfl",
        "demo",
        *("--devices", str(config["devices"]), "--gateways", str(config["gateways"])),
        *("--rounds", str(config["rounds"]), "--alpha", str(config["alpha"]), "--seed", str(config["seed"])),
        *("--dataset", config["dataset"], "--no-battery", "--aggregation", cell.rule, "--json", str(report)),
        *("--clip-norm", str(config["clip_norm"]), "--trim", str(config["trim"]), "--krum-f", str(config["krum_f"])),
        *(["--attack", cell.column] if cell.attack else []),
    ]
    # The grid sets every option it varies; an IOTFL_* variable left in the shell must not change a cell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTFL_")}
    timeout = RUN_STARTUP_SECONDS + RUN_SECONDS_PER_ROUND * config["rounds"]
    started = time.monotonic()
    with open(logs / f"{name}.log", "wb") as log, tempfile.TemporaryDirectory(prefix="iotfl-poison-") as workdir:
        try:
            code = subprocess.run(
                [*args, "--workdir", workdir], stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    seconds = round(time.monotonic() - started, 1)
    row: dict[str, Any] = {**asdict(cell), "column": cell.column, "seconds": seconds, "final_accuracy": None}
    if code != 0 or not report.exists():
        row["error"] = f"demo exited with {code}" if code != -1 else f"timed out after {timeout:.0f} s"
        return row
    data = json.loads(report.read_text())
    row["final_accuracy"] = data["final_accuracy"]
    row["accuracy_by_round"] = [r["accuracy"] for r in data["rounds"]]
    row["attackers"] = len(data.get("fleet", {}).get("attackers", []))
    row["centralized_accuracy"] = data["centralized_accuracy"]
    return row


def table_of(results: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """rule → column → final accuracy."""
    out: dict[str, dict[str, float | None]] = {}
    for r in results:
        out.setdefault(r["rule"], {})[r["column"]] = r["final_accuracy"]
    return out


def print_table(table: dict[str, dict[str, float | None]], columns: list[str], title: str) -> None:
    clean = table.get("fedavg", {}).get("none")
    t = Table(title=title)
    t.add_column("rule")
    for c in columns:
        t.add_column(c, justify="right")
    for rule, row in table.items():
        cells = []
        for c in columns:
            acc = row.get(c)
            if acc is None:
                cells.append("—")
            else:
                mark = "" if clean is None or c == "none" else f" ({(acc - clean) * 100:+.1f})"
                cells.append(f"{acc * 100:.1f}{mark}")
        t.add_row(rule, *cells)
    console.print(t)
    if clean is not None:
        console.print(f"final accuracy in %; (±points) against the clean FedAvg run, {clean * 100:.1f} %")


def plot(table: dict[str, dict[str, float | None]], columns: list[str], path: Path, title: str) -> None:
    """Grouped bars: one group per attack column, one bar per rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = list(table)
    width = 0.8 / max(len(rules), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(columns) + 2), 4.5))
    for i, rule in enumerate(rules):
        xs = [j + (i - (len(rules) - 1) / 2) * width for j in range(len(columns))]
        values = [(table[rule].get(c) or 0.0) * 100 for c in columns]
        ax.bar(xs, values, width, label=rule)
    clean = table.get("fedavg", {}).get("none")
    if clean is not None:
        ax.axhline(clean * 100, color="black", linestyle="--", linewidth=0.8, label="clean FedAvg")
    ax.set_xticks(range(len(columns)), columns, rotation=20)
    ax.set_ylabel("final accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, ncols=3, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(
    rounds: Annotated[int, typer.Option(min=1, help="global rounds per run")] = 15,
    devices: Annotated[int, typer.Option(min=1)] = 50,
    gateways: Annotated[int, typer.Option(min=1)] = 5,
    alpha: Annotated[float, typer.Option(min=1e-6, help="Dirichlet α of the non-IID split")] = 0.5,
    seed: Annotated[int, typer.Option()] = 0,
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

    config = {"dataset": dataset, "devices": devices, "gateways": gateways, "alpha": alpha, "rounds": rounds}
    config |= {"seed": seed, "battery": False, "clip_norm": clip_norm, "trim": trim, "krum_f": krum_f}
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    json_path, png_path = out / "poisoning.json", out / "poisoning.png"
    done: dict[str, dict[str, Any]] = {}
    if resume and json_path.exists():
        earlier = json.loads(json_path.read_text())
        if earlier.get("config") == config:
            done = {f"{r['rule']} {r['column']}": r for r in earlier["results"] if r["final_accuracy"] is not None}

    cells = grid(rule_list, attack_list, pct_list, clean=not quick)
    columns = list(dict.fromkeys(c.column for c in cells))
    title = f"{dataset}, {devices} devices / {gateways} gateways, α={alpha:g}, {rounds} rounds"
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    for i, cell in enumerate(cells, 1):
        key = f"{cell.rule} {cell.column}"
        row = done.get(key) or run_cell(cell, config, logs)
        results.append(row)
        acc = row["final_accuracy"]
        shown = "FAILED: " + row.get("error", "") if acc is None else f"{acc * 100:.1f} %"
        reused = " (from the earlier run)" if key in done else f" in {row['seconds']:.0f} s"
        console.print(f"[{i}/{len(cells)}] {cell.rule:12s} {cell.column:15s} {shown}{reused}")
        report = {"config": config, "columns": columns, "table": table_of(results), "results": results}
        json_path.write_text(json.dumps(report, indent=2))

    table = table_of(results)
    print_table(table, columns, title)
    plot(table, columns, png_path, title)
    console.print(f"{len(cells)} runs in {time.monotonic() - started:.0f} s; wrote {json_path} and {png_path}")
    if any(r["final_accuracy"] is None for r in results):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
