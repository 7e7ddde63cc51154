"""``iotfl demo``: broker, cloud, gateways and a simulated fleet as real peers on 127.0.0.1, with a report.

Each part runs as its own process through the same ``iotfl`` subcommand a user would start by hand, so the demo
exercises exactly what a deployment runs: MQTT between devices and gateways, HTTP to the cloud.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flcore.datasets import Dataset
from flcore.fedbuff import MAX_STALENESS
from flcore.resources import parse_class_map
from iotfl.broker import free_port, start_broker
from iotfl.chaos import ProcessChaos, chaos_section, load_aggregates, reconcile
from iotfl.demo_processes import batched_env, dp_flags, key_flag, write_demo_keys
from iotfl.demo_settings import DemoSettings
from iotfl.energy_report import Stall, demo_energy, print_energy
from iotfl.learning_report import personal_columns, personalization_section, print_learning, width_section
from iotfl.stack import Stack, StackError, wait_for_devices, wait_for_exit, wait_healthy
from iotfl.status import history_table


def start_stack(settings: DemoSettings, workdir: Path, console: Console) -> tuple[Stack, str, Path]:
    """Start broker, cloud, gateways and fleet; returns the stack, the cloud URL and the fleet report path."""
    stack = Stack(workdir)
    plan = settings.chaos_plan()
    if settings.owns_broker:
        # kill-broker restarts it from its persistence file, as a supervised production broker would.
        persistent = "kill-broker" in plan.kinds()
        stack.broker = start_broker(prefer=settings.broker, workdir=workdir / "broker", persistent=persistent)
        broker_url = stack.broker.url
        console.print(f"broker: {stack.broker.kind} at {broker_url}")
    else:
        broker_url = settings.broker
    lr, epochs, batch = settings.training()
    tokens = {f"gw{i}": secrets.token_urlsafe(16) for i in range(settings.gateways)}
    port = free_port()
    cloud_url = f"http://127.0.0.1:{port}"
    db = workdir / "cloud.db"
    for stale in workdir.glob("cloud.db*"):
        stale.unlink()
    common = ["--dataset", settings.dataset, "--seed", str(settings.seed)]
    stack.spawn(
        "cloud",
        [
            "cloud",
            "--port",
            str(port),
            "--db",
            f"sqlite:///{db}",
            "--rounds",
            str(settings.rounds),
            "--min-gateways",
            str(settings.gateways),
            "--round-timeout",
            str(settings.round_timeout * settings.gateway_rounds + 10),
            "--lr",
            str(lr),
            "--epochs",
            str(epochs),
            "--batch",
            str(batch),
            "--gateway-rounds",
            str(settings.gateway_rounds),
            "--mode",
            settings.mode,
            "--personal-epochs",
            str(settings.personal_epochs),
            *settings.rule_flags(),
            *settings.cloud_flags(),
            *common,
        ],
        env={"IOTFL_GATEWAY_TOKENS": ",".join(f"{gw}={tok}" for gw, tok in tokens.items())},
    )
    wait_healthy(cloud_url, stack, timeout=60)
    console.print(f"cloud: {cloud_url} (dashboard at {cloud_url}/, API docs at {cloud_url}/docs)")
    report = workdir / "fleet.json"
    report.unlink(missing_ok=True)
    keys = write_demo_keys(settings, workdir / "keys")
    if keys:
        console.print(f"signed updates: a key per device in {keys['fleet']}, each gateway's in {workdir / 'keys'}")
    stack.spawn(
        "fleet",
        [
            "fleet",
            "--devices",
            str(settings.devices),
            "--sim",
            settings.sim,
            "--gateways",
            str(settings.gateways),
            "--broker",
            broker_url,
            "--alpha",
            str(settings.alpha),
            "--battery" if settings.battery else "--no-battery",
            "--energy-policy",
            settings.energy_policy,
            "--report",
            str(report),
            *(["--chaos", str(plan.for_fleet())] if plan.for_fleet() else []),
            *dp_flags(settings),
            *(["--attack", settings.attack] if settings.attack else []),
            *key_flag(keys, "fleet"),
            *common,
        ],
        # The fleet's share of the plan only: an IOTFL_CHAOS meant for the demo would name process faults.
        env={"IOTFL_CHAOS": str(plan.for_fleet()), **batched_env(settings), **settings.fleet_env()},
    )
    # Gateways start once the fleet is online, so round 1 counts every device instead of the first few.
    with console.status(f"waiting for {settings.devices} devices to come online"):
        online = wait_for_devices(broker_url, "default", settings.devices, stack, timeout=60 + settings.devices / 20)
    console.print(f"{online} of {settings.devices} devices online")
    for gw, token in tokens.items():
        stack.spawn(
            gw,
            [
                "gateway",
                "--id",
                gw,
                "--broker",
                broker_url,
                "--cloud",
                cloud_url,
                "--state-dir",
                str(workdir / gw),
                "--round-timeout",
                str(settings.round_timeout),
                "--quorum-fraction",
                str(settings.quorum_fraction),
                *settings.rule_flags(),
                *(["--enc", settings.enc, "--topk", str(settings.topk)] if settings.enc else []),
                *key_flag(keys, gw),
            ],
            env={"IOTFL_TOKEN": token},
        )
    console.print(f"{settings.gateways} gateways started; logs in {workdir}")
    return stack, cloud_url, report


def _get(client: httpx.Client, path: str) -> Any:
    response = client.get(path)
    response.raise_for_status()
    return response.json()


def follow_rounds(
    settings: DemoSettings, stack: Stack, cloud_url: str, console: Console
) -> tuple[dict, dict[int, float]]:
    """Show progress until the cloud is done (or, with energy accounting, stalled: ``stalled_at`` in the status);
    returns its final status and each round's wall time."""
    stall = Stall(settings)
    budget = settings.rounds * (settings.round_timeout * settings.gateway_rounds + 30) + 120
    deadline = time.monotonic() + budget
    seconds: dict[int, float] = {}
    started: float | None = None
    with (
        httpx.Client(base_url=cloud_url, timeout=5.0) as client,
        Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as progress,
    ):
        rounds_bar = progress.add_task("rounds", total=settings.rounds)
        round_bar = progress.add_task("round 1: gateways reported", total=settings.gateways)
        while True:
            if time.monotonic() > deadline:
                raise StackError(f"the demo did not finish within {budget:.0f} s; logs in {stack.workdir}")
            stack.check_alive(expected_exit=frozenset({"fleet"}))
            try:
                status = _get(client, "/api/v1/status")
            except (httpx.HTTPError, ValueError):
                time.sleep(0.5)
                continue
            if started is None and sum(g["last_seen"] is not None for g in status["gateways"]) >= settings.gateways:
                started = time.monotonic()
            history = status["history"]
            for row in history:
                if row["round"] not in seconds and started is not None:
                    seconds[row["round"]] = time.monotonic() - started
                    started = time.monotonic()
            last = history[-1] if history else None
            accuracy = f" · accuracy {last['accuracy'] * 100:.1f} %" if last and last["accuracy"] is not None else ""
            progress.update(rounds_bar, completed=len(history), description=f"rounds{accuracy}")
            if stall.check(len(history)):
                return {**status, "stalled_at": status["round"]}, seconds
            if status["state"] == "done":
                progress.update(round_bar, completed=settings.gateways)
                return status, seconds
            try:
                current = _get(client, f"/api/v1/rounds/{status['round']}")
                progress.update(
                    round_bar,
                    completed=len(current["gateways"]),
                    description=f"round {status['round']}: gateways reported",
                )
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)


def build_report(
    settings: DemoSettings,
    dataset: Dataset,
    status: dict,
    seconds: dict[int, float],
    fleet: dict | None,
    centralized: float,
) -> dict[str, Any]:
    from flcore.model import ModelSpec

    params = ModelSpec(dataset.layers).param_count
    rounds = [
        {
            "round": h["round"],
            "accuracy": h["accuracy"],
            "loss": h["loss"],
            "k": h["k"],
            "n": h["n"],
            "bytes_up": h["bytes_up"],
            "seconds": round(seconds.get(h["round"], float("nan")), 3),
            **personal_columns(h),
        }
        for h in status["history"]
    ]
    lr, epochs, batch = settings.training()
    report: dict[str, Any] = {
        "mode": settings.mode,
        "config": {
            **settings.model_dump(),
            "lr": lr,
            "server_lr": settings.opt_params.eta,
            "epochs": epochs,
            "batch": batch,
            "layers": list(dataset.layers),
            "params": params,
        },
        "rounds": rounds,
        "final_accuracy": rounds[-1]["accuracy"] if rounds else None,
        "centralized_accuracy": centralized,
        "bytes_up_total": sum(r["bytes_up"] for r in rounds),
        "bytes_float32_equivalent": sum(r["k"] for r in rounds) * params * 4,
        "devices_seen": status.get("devices_seen"),
    }
    if settings.personal_epochs:
        report["personalization"] = personalization_section(rounds)
    if settings.widths and fleet is not None:
        report["widths"] = width_section(
            fleet["per_device"], rounds, parse_class_map(settings.widths, what="widths", lo=0, hi=1)
        )
    if fleet is not None:
        report["battery"] = fleet.get("battery_by_round")
        # the fleet's own privacy section is superseded by the demo's, which knows the run's rounds
        report["fleet"] = {k: v for k, v in fleet.items() if k not in ("battery_by_round", "privacy", "energy")}
    if fleet is not None and "energy" in fleet:
        report["energy"] = demo_energy(fleet, dataset, rounds, settings, status.get("stalled_at"))
    if settings.dp_clip > 0:
        from iotfl.privacy import privacy_section, releases

        # Without the fleet's counts, every device may have trained in every (sub-)round.
        steps = releases(fleet["per_device"]) if fleet else settings.rounds * settings.gateway_rounds
        dp = settings.dp_clip, settings.dp_noise, settings.dp_delta
        report["privacy"] = privacy_section(*dp, settings.rounds, steps)
    return report


def print_chaos(chaos: dict[str, Any], console: Console) -> None:
    for event in chaos["injected"]:
        at = f"{event['t']:7.1f} s" if "t" in event else "   never"
        console.print(f"chaos {at}  {event['fault']}: {event.get('what', 'not injected (its round never came)')}")
    verdict = "[bold green]nothing lost[/]" if not chaos["lost"] and not chaos["double"] else "[bold red]BROKEN[/]"
    console.print(
        f"chaos ledger: devices saw {chaos['accepted_seen_by_devices']} updates accepted "
        f"({chaos['acks_seen_by_devices']}), the cloud counted k={chaos['cloud_k']}; "
        f"lost {chaos['lost']}, double {chaos['double']}: {verdict}"
    )


def print_report(report: dict[str, Any], console: Console) -> None:
    rows = [{**r} for r in report["rounds"]]
    console.print(history_table(rows, title=f"iotfl demo ({report.get('mode', 'sync')} rounds)"))
    ratio = report["bytes_float32_equivalent"] / max(report["bytes_up_total"], 1)
    console.print(
        f"final accuracy [bold]{report['final_accuracy'] * 100:.1f} %[/]  ·  centralized "
        f"{report['centralized_accuracy'] * 100:.1f} %  ·  bytes up {report['bytes_up_total']:,} "
        f"(float32 would be {report['bytes_float32_equivalent']:,}: {ratio:.2f}× more)"
    )
    print_learning(report, console)
    privacy = report.get("privacy")
    if privacy:
        console.print(
            f"differential privacy: [bold]ε = {privacy['epsilon']:.2f}[/] at δ = {privacy['delta']:g} "
            f"(ε = {privacy['epsilon_replace']:.2f} between two datasets of one device) · clip "
            f"{privacy['clip']:g}, noise ×{privacy['noise_multiplier']:g}, at most {privacy['releases']} updates "
            "per device, sampling rate 1"
        )
    if "energy" in report:
        print_energy(report["energy"], console)
    battery = report.get("battery")
    if battery:
        items = sorted(battery.items(), key=lambda kv: int(kv[0]))
        shown = items if len(items) <= 10 else items[:: max(1, len(items) // 10)] + [items[-1]]
        console.print(
            "battery (mean / min, devices trained): "
            + "  ".join(f"r{r}: {b['mean'] * 100:.0f}/{b['min'] * 100:.0f}% {b['trained']}" for r, b in shown)
        )


def run_demo(
    settings: DemoSettings, dataset: Dataset, json_path: Path | None, workdir: Path | None, console: Console
) -> int:
    """Run the demo; returns the process exit code."""
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="iotfl-demo-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    stack: Stack | None = None
    chaos: ProcessChaos | None = None
    failed = True
    started = time.time()
    try:
        stack, cloud_url, fleet_path = start_stack(settings, workdir, console)
        plan = settings.chaos_plan()
        if plan:
            broker_url = stack.broker.url if stack.broker is not None else settings.broker
            chaos = ProcessChaos(plan.for_demo(), stack, broker_url, cloud_url)
            chaos.start()
            console.print(f"chaos armed: {plan}")
        status, seconds = follow_rounds(settings, stack, cloud_url, console)
        if chaos is not None:
            chaos.stop()
        wait_for_exit(stack, "fleet", timeout=0 if "stalled_at" in status else 30)
        fleet = json.loads(fleet_path.read_text()) if fleet_path.exists() else None
        stack.stop()
        stack = None
        from device_sim.trainer import train_centralized

        with console.status("training the same MLP centrally for comparison"):
            centralized = train_centralized(dataset, seed=settings.seed)
        report = build_report(settings, dataset, status, seconds, fleet, centralized)
        print_report(report, console)
        broken = False
        if chaos is not None:
            ledger = reconcile(
                (fleet or {}).get("per_device", []),
                load_aggregates(workdir / "cloud.db"),
                settings.gateway_rounds,
                stale_rounds=MAX_STALENESS if settings.mode == "async" else 0,
            )
            section = chaos_section(plan, chaos.events, (fleet or {}).get("chaos", []), ledger, started)
            report["chaos"] = section
            print_chaos(section, console)
            broken = bool(ledger.lost or ledger.double)
        if json_path is not None:
            json_path.write_text(json.dumps(report, indent=2))
            console.print(f"report written to {json_path}")
        failed = broken
        return 1 if broken else 0
    except StackError as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("interrupted: stopping every part of the stack")
        return 130
    finally:
        if chaos is not None:
            chaos.stop(restore=False)  # a no-op after a normal end (stopped above)
        if stack is not None:
            stack.stop()
        if own_dir and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
