"""Fleet benchmark: 1,000 simulated devices, each its own MQTT connection, one gateway per 200 devices, 3 rounds.

One ``iotfl demo`` run (its own mosquitto, cloud, gateway processes and one fleet process whose connections all
run on a single network loop, ``device_sim.netloop``) with batteries off and every device able to train, so every
device trains and is counted in every round. Measured: devices connected, updates the cloud counted per round,
round wall time, the fleet process's peak RSS, CPU time and threads (from its report).

Anchors measured in the same run (absolute times on a shared 2-core machine are noisy):
- ``train_round_s``: the same devices' local training for one round, in this process on the same 2 worker
  threads without any MQTT, right before each demo run (median over the runs) — a round's floor;
  ``round_s / train_round_s`` is what the network, gateways and cloud add on top.
- ``base_rss_mb``: the fleet process's RSS before it made its devices (Python, torch, the dataset); the memory of
  the devices and their connections is the rest.

    python benchmarks/fleet.py                  # 1,000 devices, 5 gateways, 3 rounds (~4 min on 2 cores)
    python benchmarks/fleet.py --quick          # smoke run: 50 devices, 1 gateway, 1 round
    python benchmarks/fleet.py --repeat 3       # 3 demo runs: medians of the round times, max of the peaks

Prints a table and writes ``results/fleet.json``; exit code 1 when a demo run failed or a device was not counted.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "fleet.json"
# Every RAM class here trains the digits MLP, so every device sends an update every round.
TRAINING_MIX = {"class2": 0.7, "constrained": 0.3}
WORKERS = 2  # the fleet's training threads (FleetSettings.workers default)
TARGET_ROUND_S = 60.0
TARGET_RSS_MB = 600.0

console = Console()


def train_anchor(devices: int, gateways: int, dataset: str, seed: int) -> dict[str, float]:
    """One round of the fleet's local training without MQTT: wall and CPU seconds on ``WORKERS`` threads."""
    from device_sim.population import build_population
    from device_sim.settings import FleetSettings
    from device_sim.trainer import train_local
    from flcore.model import ModelSpec
    from iotfl.datasets import load as load_dataset
    from iotfl.demo_settings import TRAINING_DEFAULTS

    data = load_dataset(dataset, seed)
    settings = FleetSettings(devices=devices, gateways=gateways, dataset=dataset, seed=seed, ram_mix=TRAINING_MIX)
    profiles = build_population(settings, data.y_train)
    spec = ModelSpec(data.layers)
    w = spec.init(seed)
    lr, epochs, batch = TRAINING_DEFAULTS[dataset]

    def train(i: int) -> None:
        idx = profiles[i].indices
        train_local(spec, w, data.x_train[idx], data.y_train[idx], lr, epochs, batch, i)

    train(0)  # torch's first call pays for its own set-up
    cpu, wall = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(train, range(len(profiles))))
    return {"train_round_s": time.perf_counter() - wall, "train_cpu_s": time.process_time() - cpu}


def run_demo(devices: int, gateways: int, rounds: int, dataset: str, seed: int, timeout: float, work: Path) -> dict:
    """One ``iotfl demo`` run; its JSON report plus the run's wall time (``error`` set when it failed)."""
    report = work / "demo.json"
    args = [
        *(sys.executable, "-m", "iotfl", "demo", "--devices", str(devices), "--gateways", str(gateways)),
        *("--rounds", str(rounds), "--dataset", dataset, "--seed", str(seed), "--no-battery"),
        *("--round-timeout", str(timeout), "--json", str(report), "--workdir", str(work / "demo")),
    ]
    env = {**os.environ, "IOTFL_RAM_MIX": json.dumps(TRAINING_MIX)}
    started = time.monotonic()
    budget = 300 + rounds * (timeout + 60) + devices / 5
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return {"error": f"the demo did not finish within {budget:.0f} s; logs in {work / 'demo'}"}
    seconds = time.monotonic() - started
    if done.returncode != 0 or not report.exists():
        tail = (done.stdout + done.stderr)[-2000:]
        return {"error": f"the demo failed (exit {done.returncode}); logs in {work / 'demo'}:\n{tail}"}
    return {**json.loads(report.read_text()), "demo_seconds": seconds}


def summarize(devices: int, runs: list[dict], anchor: dict[str, float]) -> dict[str, Any]:
    """The figures of the runs (medians of the round times, worst case of the counts and peaks) and the checks."""
    fleets = [r["fleet"] for r in runs]
    round_s = [r["seconds"] for run in runs for r in run["rounds"]]
    counted = [r["k"] for run in runs for r in run["rounds"]]
    connected = min(sum(d["connects"] >= 1 for d in f["per_device"]) for f in fleets)
    peak = max(f["process"]["peak_rss_mb"] for f in fleets)
    base = statistics.median(f["process"]["base_rss_mb"] for f in fleets)
    cpu = statistics.median(f["process"]["cpu_user_s"] + f["process"]["cpu_system_s"] for f in fleets)
    fleet_s = statistics.median(f["seconds"] for f in fleets)
    rounds = statistics.median(len(run["rounds"]) for run in runs)
    median_round = statistics.median(round_s)
    return {
        "devices_connected": connected,
        "counted_per_round": counted,
        "round_s": round_s,
        "round_s_median": round(median_round, 2),
        "round_s_max": round(max(round_s), 2),
        "round_vs_train_only": round(median_round / anchor["train_round_s"], 2),
        "peak_rss_mb": peak,
        "base_rss_mb": base,
        "rss_per_device_kb": round((peak - base) * 1024 / devices, 1),
        "fleet_cpu_s": round(cpu, 1),
        "fleet_seconds": round(fleet_s, 1),
        "fleet_cpu_cores": round(cpu / fleet_s, 2),
        "fleet_cpu_per_round_vs_train_only": round(cpu / rounds / anchor["train_cpu_s"], 2),
        "fleet_threads": max(f["process"]["threads"] for f in fleets),
        "demo_seconds": [round(r["demo_seconds"], 1) for r in runs],
        "checks": {
            "every_device_connected": connected == devices,
            "every_device_counted_each_round": all(k == devices for k in counted),
            "rss_le_600_mb": peak <= TARGET_RSS_MB,
            "round_le_60_s": max(round_s) <= TARGET_ROUND_S,
        },
    }


def show(devices: int, summary: dict[str, Any], anchor: dict[str, float]) -> None:
    def ok(flag: bool) -> str:
        return "[green]yes[/]" if flag else "[bold red]NO[/]"

    c = summary["checks"]
    t = Table(title=f"Fleet: {devices} devices, one MQTT connection each, one network loop")
    for col in ("figure", "target", "measured", "against the anchor", "met"):
        t.add_column(col)
    t.add_row("devices connected", f"{devices}", f"{summary['devices_connected']}", "", ok(c["every_device_connected"]))
    counted = ", ".join(map(str, summary["counted_per_round"]))
    t.add_row("updates counted per round", f"{devices} each", counted, "", ok(c["every_device_counted_each_round"]))
    t.add_row(
        "round wall time",
        f"≤ {TARGET_ROUND_S:.0f} s",
        f"median {summary['round_s_median']:.1f} s, max {summary['round_s_max']:.1f} s",
        f"{summary['round_vs_train_only']:.2f}× training only ({anchor['train_round_s']:.1f} s)",
        ok(c["round_le_60_s"]),
    )
    t.add_row(
        "fleet process peak RSS",
        f"≤ {TARGET_RSS_MB:.0f} MB",
        f"{summary['peak_rss_mb']:.0f} MB",
        f"{summary['rss_per_device_kb']:.0f} KB/device above {summary['base_rss_mb']:.0f} MB before the devices",
        ok(c["rss_le_600_mb"]),
    )
    t.add_row(
        "fleet process CPU",
        "",
        f"{summary['fleet_cpu_s']:.0f} s in {summary['fleet_seconds']:.0f} s ({summary['fleet_cpu_cores']:.2f} cores)",
        f"{summary['fleet_cpu_per_round_vs_train_only']:.2f}× training-only CPU per round",
        "",
    )
    t.add_row("fleet process threads", "", f"{summary['fleet_threads']} (with the training pool)", "", "")
    console.print(t)


def main(
    devices: Annotated[int, typer.Option(min=1, help="simulated devices")] = 1000,
    per_gateway: Annotated[int, typer.Option(min=1, help="devices per gateway")] = 200,
    rounds: Annotated[int, typer.Option(min=1, help="global rounds per demo run")] = 3,
    repeat: Annotated[int, typer.Option(min=1, help="demo runs (medians of round times, max of peaks)")] = 1,
    round_timeout: Annotated[float, typer.Option(min=1, help="gateway round deadline (s), above the target")] = 120,
    dataset: Annotated[str, typer.Option()] = "digits",
    seed: Annotated[int, typer.Option()] = 0,
    quick: Annotated[bool, typer.Option(help="smoke run: 50 devices, 1 round")] = False,
    json_path: Annotated[Path, typer.Option("--json", help="where to write the JSON")] = DEFAULT_JSON,
) -> None:
    """Run the fleet benchmark: table on stdout, JSON to --json."""
    if quick:
        devices, rounds, repeat = 50, 1, 1
    gateways = math.ceil(devices / per_gateway)
    load_before = os.getloadavg()
    runs: list[dict] = []
    anchors: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="iotfl-bench-fleet-") as tmp:
        for i in range(repeat):
            # The anchor right before each run, so both see about the same load on the shared cores.
            console.print(f"[{i + 1}/{repeat}] anchor: one round of local training for {devices} devices, no MQTT")
            anchors.append(train_anchor(devices, gateways, dataset, seed))
            console.print(f"[{i + 1}/{repeat}] iotfl demo --devices {devices} --gateways {gateways} --rounds {rounds}")
            run = run_demo(devices, gateways, rounds, dataset, seed, round_timeout, Path(tmp) / f"run{i}")
            if "error" in run:
                console.print(f"[bold red]{run['error']}[/]")
                raise typer.Exit(1)
            runs.append(run)
    anchor = {k: statistics.median(a[k] for a in anchors) for k in anchors[0]}
    summary = summarize(devices, runs, anchor)
    show(devices, summary, anchor)
    result = {
        "config": {
            **{"devices": devices, "gateways": gateways, "rounds": rounds, "repeat": repeat, "dataset": dataset},
            **{"seed": seed, "round_timeout": round_timeout, "ram_mix": TRAINING_MIX, "workers": WORKERS},
            "quick": quick,
        },
        "targets": {"round_s": TARGET_ROUND_S, "peak_rss_mb": TARGET_RSS_MB},
        "anchor": {k: round(v, 3) for k, v in anchor.items()},
        "anchors": [{k: round(v, 3) for k, v in a.items()} for a in anchors],
        "load": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "cpus": os.cpu_count(),
        **summary,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    console.print(f"load average before {result['load']['before']}, after {result['load']['after']}; wrote {json_path}")
    if not (summary["checks"]["every_device_connected"] and summary["checks"]["every_device_counted_each_round"]):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
