"""Energy benchmark: the naive and the aware selection policy on a solar-harvesting fleet, through the real stack.

Each policy is one ``iotfl demo --sim batched --energy-policy POLICY`` run (its own broker, cloud, gateways and
batched fleet over real MQTT and HTTP) on the sensors dataset with batteries on and energy accounting
(``flcore.energy``: joules from the bytes each device receives and sends, its multiply-accumulates and its deep
sleep). The scenario (``SCENARIO``, docs/learning.md "Energy") is an energy-harvesting node: hourly rounds, a
small store (a 1 F supercapacitor used between 5.0 V and 3.0 V: ½ · 1 F · (5² − 3²) V² = 8 J) and a small solar cell
(24 rounds a day, dark half the day, 0.35 J per round on average), so that a training (~0.8 J) is a tenth of the
store and the night is what kills. The devices start between 30 % and 100 % charged. A fleet in which no device can
train any more stalls the run (the cloud extends a round without aggregates): the demo then ends early with
``stalled_at`` in its energy section.

    python benchmarks/energy.py            # 50 devices on 2 gateways, 50 rounds, naive and aware: table + JSON
    python benchmarks/energy.py --quick    # a smoke run: 10 devices, 2 gateways, 3 rounds

Writes ``energy.json`` in ``--out``; each run's demo log stays in ``--out/logs``. Exit code 1 when a run failed.
"""

from __future__ import annotations

import json
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

POLICIES = ("naive", "aware")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# The fleet's energy scenario, as the IOTFL_* settings of its devices (device_sim.settings).
SCENARIO = {
    "IOTFL_BATTERY_J": "8.0",  # the store: a 1 F supercapacitor between 5.0 V and 3.0 V
    "IOTFL_ROUND_S": "3600",  # one round an hour: the deep sleep between rounds
    "IOTFL_RECHARGE_PROFILE": "solar",
    "IOTFL_SOLAR_PERIOD": "24",  # a day of 24 rounds, dark half of it
    "IOTFL_RECHARGE": "0.044",  # mean share of the store gained per round: 0.35 J (~98 µW), 1.1 J at noon
}
# Acceptance of issue 9 for the aware policy.
ALIVE_SHARE, MIN_ACCURACY = 0.8, 0.75
# A gateway none of whose devices trained posts nothing, so the cloud closes that round at its deadline
# (round timeout + 10 s): a short round timeout keeps a dying fleet's run short (simulated time is ROUND_S anyway).
ROUND_TIMEOUT = 3.0
RUN_SECONDS_PER_ROUND = 30.0
RUN_STARTUP_SECONDS = 120.0

console = Console()


def run_policy(policy: str, options: list[str], out: Path, rounds: int) -> dict[str, Any]:
    """One demo run with ``policy``; its figures, or ``{"error": …}``."""
    report_path = out / f"energy-{policy}.json"
    report_path.unlink(missing_ok=True)
    started = time.monotonic()
    code = run_demo(
        [*options, "--energy-policy", policy, "--json", str(report_path)],
        out / "logs" / f"{policy}.log",
        timeout=RUN_STARTUP_SECONDS + rounds * RUN_SECONDS_PER_ROUND,
        env=demo_env(**SCENARIO),
    )
    if code != 0 or not report_path.exists():
        return {"error": f"demo exit code {code}; see logs/{policy}.log"}
    report = json.loads(report_path.read_text())
    report_path.unlink()
    energy = report["energy"]
    devices = energy["devices"]
    alive = {row["round"]: row["alive"] for row in energy["rounds"]}
    return {
        "seconds": round(time.monotonic() - started, 1),
        "final_accuracy": report["final_accuracy"],
        "centralized_accuracy": report["centralized_accuracy"],
        "initial_accuracy": energy["initial_accuracy"],
        "trainings": report["fleet"]["trainings"],
        "skips": report["fleet"]["skips"],
        "devices": devices,
        "alive_final": energy["alive_final"],
        "alive_by_round": alive,
        "lifetime_rounds": energy["lifetime_rounds"],
        "stalled_at": energy["stalled_at"],
        "joules_total": energy["joules_total"],
        "joules_by_kind": energy["joules_by_kind"],
        "joules_per_round": round(energy["joules_total"] / max(len(alive), 1), 3),
        "joules_per_accuracy_point": energy["joules_per_accuracy_point"],
        "accuracy_by_round": [r["accuracy"] for r in report["rounds"]],
        "meets_acceptance": energy["alive_final"] >= ALIVE_SHARE * devices
        and isinstance(energy["lifetime_rounds"], str)
        and len(report["rounds"]) == rounds
        and (report["final_accuracy"] or 0.0) >= MIN_ACCURACY,
    }


def show(results: dict[str, dict[str, Any]], rounds: int) -> None:
    table = Table(title=f"energy: sensors, solar-harvesting fleet, {rounds} rounds")
    cols = ("policy", "final acc", "rounds", "trainings", "alive at end", "lifetime", "J total", "J/round", "J/point")
    for col in cols:
        table.add_column(col, justify="right")
    for policy, r in results.items():
        if "error" in r:
            table.add_row(policy, r["error"], *[""] * 7)
            continue
        per_point = r["joules_per_accuracy_point"]
        table.add_row(
            policy,
            f"{r['final_accuracy'] * 100:.1f} %",
            str(len(r["accuracy_by_round"])) + ("" if r["stalled_at"] is None else f" (stalled at {r['stalled_at']})"),
            str(r["trainings"]),
            f"{r['alive_final']} / {r['devices']}",
            str(r["lifetime_rounds"]),
            f"{r['joules_total']:.1f}",
            f"{r['joules_per_round']:.2f}",
            "-" if per_point is None else f"{per_point:.2f}",
        )
    console.print(table)


def main(
    quick: Annotated[bool, typer.Option(help="Smoke run: 10 devices, 2 gateways, 3 rounds.")] = False,
    out: Annotated[Path, typer.Option(help="Folder of energy.json and logs/.")] = DEFAULT_OUT,
    seed: Annotated[int, typer.Option(help="Seed of the split, the devices and the model.")] = 0,
) -> None:
    devices, gateways, rounds = (10, 2, 3) if quick else (50, 2, 50)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    options = [
        *("--sim", "batched", "--dataset", "sensors", "--battery", "--seed", str(seed)),
        *("--devices", str(devices), "--gateways", str(gateways), "--rounds", str(rounds)),
        *("--round-timeout", str(ROUND_TIMEOUT)),
    ]
    results: dict[str, dict[str, Any]] = {}
    for policy in POLICIES:
        console.print(f"running {policy} …")
        results[policy] = run_policy(policy, options, out, rounds)
    show(results, rounds)
    config = {
        **{"devices": devices, "gateways": gateways, "rounds": rounds, "seed": seed, "dataset": "sensors"},
        "round_timeout": ROUND_TIMEOUT,
    }
    report = {"config": {**config, "scenario": SCENARIO}, "results": results}
    (out / "energy.json").write_text(json.dumps(report, indent=2))
    console.print(f"written to {out / 'energy.json'}")
    if any("error" in r for r in results.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
