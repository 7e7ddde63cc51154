"""The ``iotfl`` command: one subcommand per part of the stack.

Every flag also reads ``IOTFL_<FLAG>`` from the environment, then the TOML config file (``--config FILE``, else
``./iotfl.toml``; ``iotfl.config``); flags win. Exit codes are ``cli_common.EXIT_*``.
Heavy imports (torch, FastAPI) happen inside the commands that need them, so
``iotfl gateway`` runs on a Raspberry Pi install without either.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from iotfl.cli_board import flash_cmd, ota_app, provision_app
from iotfl.cli_common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    AggregationOpt,
    ClipNormOpt,
    ConfigOpt,
    KrumFOpt,
    SelectOpt,
    ServerBeta2Opt,
    ServerEpsOpt,
    ServerLrOpt,
    ServerMomentumOpt,
    ServerOptOpt,
    TopkOpt,
    TrimOpt,
    WidthsOpt,
    err,
    fail,
    load_dataset,
    missing_extra,
    opt,
    progress_bars,
    settings_for,
    setup_logging,
    stop_event,
)
from iotfl.cli_db import db_app
from iotfl.cli_fog import fog_cmd
from iotfl.cli_services import broker_cmd, cloud_cmd, gateway_cmd
from iotfl.fleet_progress import FleetProgress

app = typer.Typer(
    help="Federated learning for IoT fleets over MQTT: devices → gateways → cloud.\n\n"
    "Every option also reads IOTFL_<OPTION> from the environment and the TOML file given by --config "
    "(default ./iotfl.toml); flags win. Exit codes: 0 ok, 1 failure, 2 bad usage or settings, 3 missing extra, "
    "130 interrupted.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from iotfl import __version__

        typer.echo(f"iotfl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Options taken before any command (--version, shell completion)."""


SimOpt = Annotated[
    str,
    opt(
        "device: a connection and a training per device | batched: the devices of a round train together and one "
        "shared connection per gateway carries their updates (no chaos, attacks, DP or per-device logins).",
        "SIM",
    ),
]
EnergyPolicyOpt = Annotated[
    str,
    opt(
        "off: batteries drain by fixed fractions | naive | aware: they drain by joules (bytes sent and received, "
        "multiply-accumulates, sleep; flcore.energy), a device whose store runs out is dead, and a device trains by "
        "the policy (naive: charge >= 10 %; aware: keeps a reserve for the night and throttles to the recharge).",
        "ENERGY_POLICY",
    ),
]
AttackOpt = Annotated[
    str | None,
    opt("Poisoning attackers KIND:PCT, KIND sign-flip | scale10 | label-flip (e.g. sign-flip:20%).", "ATTACK"),
]


@app.command()
def demo(
    ctx: typer.Context,
    devices: Annotated[int, opt("Simulated devices, each its own MQTT connection.", "DEVICES", min=1)] = 50,
    gateways: Annotated[int, opt("Gateways gw0…gw{G-1}; device i belongs to gateway i mod G.", "GATEWAYS", min=1)] = 5,
    rounds: Annotated[int, opt("Global rounds.", "ROUNDS", min=1)] = 20,
    sim: SimOpt = "device",
    dataset: Annotated[str, opt("digits | sensors | har | csv:PATH", "DATASET")] = "digits",
    alpha: Annotated[float, opt("Dirichlet α of the non-IID split (small = skewed).", "ALPHA", min=1e-6)] = 0.5,
    seed: Annotated[int, opt("Seed for data, split, model init and devices.", "SEED")] = 0,
    broker: Annotated[
        str, opt("auto (mosquitto if installed, else embedded) | embedded | mqtt://host:port", "BROKER")
    ] = "auto",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = None,
    battery: Annotated[bool, opt("Battery model (drain, recharge, battery-aware selection).", "BATTERY")] = True,
    energy_policy: EnergyPolicyOpt = "off",
    gateway_rounds: Annotated[
        int, opt("Local aggregation rounds per global round at each gateway.", "GATEWAY_ROUNDS", min=1)
    ] = 1,
    lr: Annotated[float | None, opt("Local SGD learning rate [default: per dataset].", "LR")] = None,
    epochs: Annotated[int | None, opt("Local epochs per round [default: per dataset].", "EPOCHS")] = None,
    batch: Annotated[int | None, opt("Local batch size [default: per dataset].", "BATCH")] = None,
    round_timeout: Annotated[float, opt("Seconds before a round closes without everyone.", "ROUND_TIMEOUT")] = 30.0,
    mode: Annotated[
        str, opt("sync | async: async counts updates of earlier rounds with a staleness weight (FedBuff).", "MODE")
    ] = "sync",
    quorum_fraction: Annotated[
        float,
        opt("Gateways close a round once ceil(F × live devices) updates came in (0 = off).", "QUORUM_FRACTION"),
    ] = 0.0,
    chaos: Annotated[
        str | None,
        opt(
            "Faults to inject, comma-separated: kill-broker[:DOWN], kill-gateway:GW[:DOWN], cloud-down[:DURATION], "
            "partition:GW[:DURATION], drop-devices:PCT, slow-devices:PCT, each with an optional @roundN or @F "
            "(mid-round ceil(F·rounds); default @0.5). The report gets a 'chaos' section; the exit code is 1 if an "
            "acknowledged update was lost or counted twice.",
            "CHAOS",
        ),
    ] = None,
    dp_clip: Annotated[
        float, opt("Differential privacy: clip each device's update to this L2 norm (0 = off).", "DP_CLIP")
    ] = 0.0,
    dp_noise: Annotated[float, opt("DP noise multiplier z: Gaussian noise std z × dp-clip.", "DP_NOISE")] = 1.0,
    dp_delta: Annotated[float, opt("DP: the δ at which the report states ε.", "DP_DELTA")] = 1e-5,
    aggregation: AggregationOpt = "fedavg",
    clip_norm: ClipNormOpt = 0.0,
    trim: TrimOpt = 0.2,
    krum_f: KrumFOpt = 0.2,
    server_opt: ServerOptOpt = "fedavg",
    server_lr: ServerLrOpt = None,
    server_momentum: ServerMomentumOpt = None,
    server_beta2: ServerBeta2Opt = 0.99,
    server_eps: ServerEpsOpt = 1e-3,
    select: SelectOpt = None,
    widths: WidthsOpt = None,
    ram_mix: Annotated[
        str | None,
        opt(
            "Share of each RAM class in the simulated fleet, e.g. class1=0.4,class2=0.6 "
            "[default: class0=0.04,class1=0.06,class2=0.6,constrained=0.3].",
            "RAM_MIX",
        ),
    ] = None,
    ram_follows_data: Annotated[
        bool,
        opt(
            "Hand out RAM classes by the devices' most common label (smallest class first) instead of at random: "
            "the small devices then hold data the others lack.",
            "RAM_FOLLOWS_DATA",
        ),
    ] = False,
    attack: AttackOpt = None,
    enc: Annotated[
        str | None,
        opt("Update encoding every gateway's tasks name: int8 | int4 | topk | f32 [default: none named: int8].", "ENC"),
    ] = None,
    topk: TopkOpt = 0.05,
    signed: Annotated[
        bool, opt("Sign every update: a random HMAC key per device; the gateways refuse unsigned ones.", "SIGNED")
    ] = False,
    personal_epochs: Annotated[
        int,
        opt(
            "Personalization: devices hold out 20 % of their samples, fine-tune a personal head for this many epochs "
            "and report personalized vs global accuracy (0 = off).",
            "PERSONAL_EPOCHS",
            min=0,
            max=1000,
        ),
    ] = 0,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep logs, database and state here [default: a temp dir].")
    ] = None,
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the whole stack on this machine (broker, cloud, gateways, simulated fleet) over real MQTT and HTTP."""
    from iotfl.demo import run_demo
    from iotfl.demo_settings import DemoSettings

    settings = settings_for(ctx, DemoSettings, config, locals())
    setup_logging(verbose)
    dataset_obj = load_dataset(settings.dataset, settings.seed)
    code = run_demo(settings, dataset_obj, json_path, workdir, Console())
    raise typer.Exit(code)


# Registered here so that `iotfl --help` lists the services right after the demo.
app.command("broker")(broker_cmd)
app.command("cloud")(cloud_cmd)
app.command("gateway")(gateway_cmd)


@app.command()
def fleet(
    ctx: typer.Context,
    devices: Annotated[int, opt("Simulated devices.", "DEVICES", min=1)] = 50,
    gateways: Annotated[int, opt("Gateways gw0…gw{G-1}; device i joins gateway i mod G.", "GATEWAYS", min=1)] = 5,
    sim: SimOpt = "device",
    broker: Annotated[str, opt("mqtt://host:port", "BROKER")] = "mqtt://127.0.0.1:1883",
    fleet: Annotated[str, opt("Fleet name.", "FLEET")] = "default",
    dataset: Annotated[str, opt("digits | sensors | har | csv:PATH", "DATASET")] = "digits",
    alpha: Annotated[float, opt("Dirichlet α of the non-IID split.", "ALPHA")] = 0.5,
    seed: Annotated[int, opt("Seed of data, split and devices.", "SEED")] = 0,
    battery: Annotated[bool, opt("Battery model on/off.", "BATTERY")] = True,
    energy_policy: EnergyPolicyOpt = "off",
    chaos: Annotated[
        str | None,
        opt(
            "Device faults to inject: drop-devices:PCT (vanish without a DISCONNECT) and slow-devices:PCT "
            "(publish after the deadline), each with an optional @roundN (mid-round N) or @F (of IOTFL_ROUNDS, "
            "default 20).",
            "CHAOS",
        ),
    ] = None,
    dp_clip: Annotated[
        float, opt("Differential privacy: clip each update's delta to this L2 norm (0 = off).", "DP_CLIP")
    ] = 0.0,
    dp_noise: Annotated[float, opt("DP noise multiplier z: Gaussian noise std z × dp-clip.", "DP_NOISE")] = 1.0,
    dp_delta: Annotated[float, opt("DP: the δ at which the report states ε.", "DP_DELTA")] = 1e-5,
    attack: AttackOpt = None,
    enc: Annotated[
        str, opt("Update encoding when the task names none: int8 | int4 | topk | f32 (a task's enc wins).", "ENC")
    ] = "int8",
    topk: TopkOpt = 0.05,
    device_keys: Annotated[
        Path | None,
        opt('JSON {"<dev>": "<64 hex>"}: devices with a key sign their updates.', "DEVICE_KEYS", show_default=False),
    ] = None,
    provisioned: Annotated[
        Path | None,
        opt(
            "Folder of `iotfl provision fleet`: each device logs in with its own credentials; the folder's CA and "
            "device-keys.json are the defaults of IOTFL_TLS_CA and --device-keys.",
            "PROVISIONED",
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the fleet's JSON report here when it ends.")] = None,
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a fleet of simulated devices, each its own MQTT connection, until the cloud's last round."""
    try:
        from device_sim.fleet import run_fleet
        from device_sim.settings import FleetSettings
    except ImportError as exc:
        missing_extra("sim", exc)

    settings = settings_for(ctx, FleetSettings, config, locals())
    setup_logging(verbose)
    data = load_dataset(settings.dataset, settings.seed)
    with progress_bars() as bars:
        try:
            result = run_fleet(settings, data, stop_event(), FleetProgress(bars, settings.devices))
        except ValueError as exc:
            fail(str(exc))
        except ConnectionError as exc:
            fail(str(exc), EXIT_FAILURE)
    if report is not None:
        import json

        out = result.to_dict()
        if settings.dp_clip > 0:
            from iotfl.privacy import privacy_section, releases

            dp = settings.dp_clip, settings.dp_noise, settings.dp_delta
            out["privacy"] = privacy_section(*dp, settings.rounds, releases(out["per_device"]))
        report.write_text(json.dumps(out, indent=2))


@app.command()
def status(
    cloud: Annotated[str, opt("The cloud's base URL.", "CLOUD")] = "http://127.0.0.1:8000",
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON for scripts: /api/v1/status plus 'overview' (/api/v1/gateways) and 'device_states'.",
        ),
    ] = False,
) -> None:
    """Show the cloud's status: round, model version, gateways (devices, bytes, round progress), rejected updates and
    the accuracy history. Exit code 1 when the cloud cannot be read."""
    from iotfl.status import show_status

    raise typer.Exit(show_status(cloud, as_json, Console(), err))


app.add_typer(provision_app, name="provision", no_args_is_help=True)
app.command("flash")(flash_cmd)
app.command("fog")(fog_cmd)
app.add_typer(ota_app, name="ota", no_args_is_help=True)
app.add_typer(db_app, name="db", no_args_is_help=True)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
