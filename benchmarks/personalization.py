"""Personalization benchmark: personal heads against the global model, and few-shot adaptation of new devices.

One ``iotfl demo --sim batched --personal-epochs E`` run (its own mosquitto, cloud, gateways and batched fleet over
real MQTT and HTTP; digits, 100 devices, Dirichlet α = 0.1, batteries off). Every device holds out 20 % of its
samples, trains its global update on the rest, fine-tunes its personal head for E epochs and reports both held-out
accuracies; the cloud keeps their means per round. Then the final global model is read from the run's database and
adapted to new devices: each draws a label mix from Dirichlet(α) over the classes, gets ``--shots`` labelled
examples of that mix from the held-out test split, adapts its head in a few steps (``device_sim.personal.few_shot``)
and is evaluated on other test samples of the same mix, against the global model on the same samples.

    python benchmarks/personalization.py              # the full run (~2 min on 2 cores), table + JSON
    python benchmarks/personalization.py --quick      # a smoke run: 10 devices, 2 rounds, 10 new devices

Writes ``personalization.json`` in ``--out`` (default ``benchmarks/results/``), the demo's log in ``--out/logs``.
Exit code 1 when the demo failed.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from contextlib import closing
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

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
RUN_SECONDS_PER_ROUND = 30.0
RUN_STARTUP_SECONDS = 120.0
EVAL_SAMPLES = 40  # test samples each new device is judged on (beyond its shots), drawn with its label mix
TARGET_PERSONAL = 0.03  # personalized ≥ global + 3 points on the devices' own held-out samples
TARGET_FEW_SHOT = 0.05  # a new device's adapted model ≥ the global model + 5 points

console = Console()


def final_weights(workdir: Path) -> np.ndarray | None:
    """The newest global model in a demo's cloud database (little-endian float32), None without one. Plain sqlite3:
    run as a script, this folder's cloud.py would shadow the cloud package."""
    path = workdir / "cloud.db"
    if not path.exists():
        return None
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT weights FROM iotfl_models ORDER BY version DESC LIMIT 1").fetchone()
    return None if row is None else np.frombuffer(row[0], dtype="<f4").astype(np.float32)


def new_devices(y: np.ndarray, count: int, shots: int, alpha: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` new devices as (shot indices, evaluation indices) into ``y``: each one's labels follow its own
    Dirichlet(α) mix over the classes, the two sets disjoint (fewer when a class runs out of samples)."""
    rng = np.random.default_rng([seed, 9])
    classes = int(y.max()) + 1
    out = []
    for _ in range(count):
        mix = rng.dirichlet(np.full(classes, alpha))
        pools = {c: list(rng.permutation(np.flatnonzero(y == c))) for c in range(classes)}
        picked = [pools[c].pop() for c in rng.choice(classes, shots + EVAL_SAMPLES, p=mix) if pools[c]]
        if len(picked) > shots:
            out.append((np.array(picked[:shots]), np.array(picked[shots:])))
    return out


def few_shot_gain(dataset: Any, w: np.ndarray, count: int, shots: int, alpha: float, seed: int) -> dict[str, Any]:
    """Mean accuracy of the global model and of its few-shot adaptations over ``count`` new devices."""
    from device_sim.personal import few_shot
    from flcore.model import ModelSpec

    spec = ModelSpec(dataset.layers)
    x, y = dataset.x_test, dataset.y_test
    global_acc, adapted_acc = [], []
    for shot, judged in new_devices(y, count, shots, alpha, seed):
        global_acc.append(spec.evaluate(w, x[judged], y[judged])[0])
        adapted_acc.append(spec.evaluate(few_shot(spec, w, x[shot], y[shot]), x[judged], y[judged])[0])
    g, a = statistics.fmean(global_acc), statistics.fmean(adapted_acc)
    return {"devices": len(global_acc), "shots": shots, "global": g, "adapted": a, "gain": a - g}


def print_tables(rounds: list[dict[str, Any]], result: dict[str, Any]) -> None:
    t = Table(title="accuracy on the devices' own held-out samples")
    for name in ("round", "global model", "personalized", "gain (pt)", "devices", "test-set accuracy"):
        t.add_column(name, justify="right")
    for r in rounds:
        gain = (r["p_accuracy"] - r["l_accuracy"]) * 100
        t.add_row(
            str(r["round"]),
            f"{r['l_accuracy'] * 100:.1f} %",
            f"{r['p_accuracy'] * 100:.1f} %",
            f"{gain:+.1f}",
            str(r["p_devices"]),
            f"{r['accuracy'] * 100:.1f} %",
        )
    console.print(t)
    p, f = result["personal"], result["few_shot"]
    console.print(
        f"last round: personalized {p['personalized'] * 100:.1f} % vs global {p['global'] * 100:.1f} % "
        f"({p['gain'] * 100:+.1f} pt, target ≥ +{TARGET_PERSONAL * 100:.0f}: {'met' if p['met'] else 'not met'})"
    )
    console.print(
        f"few-shot, {f['devices']} new devices × {f['shots']} examples: adapted {f['adapted'] * 100:.1f} % vs global "
        f"{f['global'] * 100:.1f} % ({f['gain'] * 100:+.1f} pt, target ≥ +{TARGET_FEW_SHOT * 100:.0f}: "
        f"{'met' if f['met'] else 'not met'})"
    )


def main(
    rounds: Annotated[int, typer.Option(min=1, help="global rounds")] = 10,
    devices: Annotated[int, typer.Option(min=1)] = 100,
    gateways: Annotated[int, typer.Option(min=1)] = 5,
    alpha: Annotated[float, typer.Option(min=1e-6, help="Dirichlet α of the split and of the new devices")] = 0.1,
    seed: Annotated[int, typer.Option()] = 0,
    dataset: Annotated[str, typer.Option()] = "digits",
    personal_epochs: Annotated[int, typer.Option(min=1, max=1000, help="head fine-tuning epochs per round")] = 5,
    shots: Annotated[int, typer.Option(min=1, help="labelled examples of each new device")] = 10,
    new: Annotated[int, typer.Option(min=1, help="new devices adapted few-shot")] = 100,
    quick: Annotated[bool, typer.Option(help="smoke run: 10 devices on 2 gateways, 2 rounds, 10 new devices")] = False,
    out: Annotated[Path, typer.Option(help="directory for personalization.json and logs/")] = DEFAULT_OUT,
) -> None:
    """Run the demo with personal heads, then adapt new devices to its final model; print and write the figures."""
    from iotfl.datasets import load

    if quick:
        rounds, devices, gateways, new = 2, 10, 2, 10
    config = {"dataset": dataset, "devices": devices, "gateways": gateways, "alpha": alpha, "rounds": rounds}
    config |= {"seed": seed, "personal_epochs": personal_epochs, "shots": shots, "new_devices": new}
    config |= {"sim": "batched", "battery": False}
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    report_path = logs / "personalization-demo.json"
    report_path.unlink(missing_ok=True)
    options = [
        *("--sim", "batched", "--devices", str(devices), "--gateways", str(gateways), "--rounds", str(rounds)),
        *("--alpha", str(alpha), "--seed", str(seed), "--dataset", dataset, "--no-battery"),
        *("--personal-epochs", str(personal_epochs), "--json", str(report_path)),
    ]
    weights: list[np.ndarray | None] = []
    started = time.monotonic()
    code = run_demo(
        options,
        logs / "personalization.log",
        RUN_STARTUP_SECONDS + RUN_SECONDS_PER_ROUND * rounds,
        on_workdir=lambda workdir: weights.append(final_weights(workdir)),
    )
    seconds = round(time.monotonic() - started, 1)
    if code != 0 or not report_path.exists() or not weights or weights[0] is None:
        console.print(f"[bold red]the demo failed[/] (exit code {code}); see {logs / 'personalization.log'}")
        raise typer.Exit(1)
    demo = json.loads(report_path.read_text())
    local = [r for r in demo["rounds"] if r.get("p_devices")]
    if not local:
        console.print("[bold red]no round reported local accuracies[/]")
        raise typer.Exit(1)
    last = local[-1]
    gain = last["p_accuracy"] - last["l_accuracy"]
    personal = {"personalized": last["p_accuracy"], "global": last["l_accuracy"], "gain": gain}
    personal |= {"devices": last["p_devices"], "met": gain >= TARGET_PERSONAL}
    few = few_shot_gain(load(dataset, seed), np.asarray(weights[0]), new, shots, alpha, seed)
    few["met"] = few["gain"] >= TARGET_FEW_SHOT
    result = {"personal": personal, "few_shot": few}
    print_tables(local, result)
    report = {
        "config": config,
        **result,
        "rounds": [
            {k: r.get(k) for k in ("round", "accuracy", "p_accuracy", "l_accuracy", "p_devices")} for r in local
        ],
        "final_accuracy": demo["final_accuracy"],
        "seconds": seconds,
    }
    json_path = out / "personalization.json"
    json_path.write_text(json.dumps(report, indent=2))
    console.print(f"demo in {seconds:.0f} s; wrote {json_path}")


if __name__ == "__main__":
    typer.run(main)
