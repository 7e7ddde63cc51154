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
    ConfigOpt,
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


# Robust aggregation (docs/robustness.md), the same options on the gateway, the cloud and the demo.
AggregationOpt = Annotated[str, opt("Aggregation rule: fedavg | clip | trimmed-mean | median | krum.", "AGGREGATION")]
ClipNormOpt = Annotated[float, opt("clip: bound on each update's L2 norm (0 = the round's median norm).", "CLIP_NORM")]
TrimOpt = Annotated[float, opt("trimmed-mean: fraction of the updates trimmed at each end.", "TRIM")]
KrumFOpt = Annotated[float, opt("krum: fraction of the updates assumed hostile.", "KRUM_F")]
# Update encodings (flcore.encodings, docs/protocol.md "Encodings").
TopkOpt = Annotated[
    float, opt("topk: fraction of the delta's values each update keeps (0 < F ≤ 1).", "TOPK", min=1e-6, max=1)
]
SimOpt = Annotated[
    str,
    opt(
        "device: a connection and a training per device | batched: the devices of a round train together and one "
        "shared connection per gateway carries their updates (no chaos, attacks, DP or per-device logins).",
        "SIM",
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
    attack: AttackOpt = None,
    enc: Annotated[
        str | None,
        opt("Update encoding every gateway's tasks name: int8 | int4 | topk | f32 [default: none named: int8].", "ENC"),
    ] = None,
    topk: TopkOpt = 0.05,
    signed: Annotated[
        bool, opt("Sign every update: a random HMAC key per device; the gateways refuse unsigned ones.", "SIGNED")
    ] = False,
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


@app.command("broker")
def broker_cmd(
    port: Annotated[int, opt("TCP port on 127.0.0.1.", "PORT")] = 1883,
    embedded: Annotated[
        bool, typer.Option(help="Use the embedded Python broker even if mosquitto is installed.")
    ] = False,
) -> None:
    """Run a local MQTT broker: mosquitto with a generated config, or the embedded broker without it."""
    from iotfl.broker import start_broker

    try:
        b = start_broker(port=port, prefer="embedded" if embedded else "auto")
    except RuntimeError as exc:
        fail(str(exc), EXIT_FAILURE)
    err.print(f"{b.kind} listening on {b.url} (logs in {b.workdir}); Ctrl-C stops it")
    stop = stop_event()
    while not stop.wait(0.5):
        if b.proc.poll() is not None:
            fail(f"{b.kind} exited with code {b.proc.returncode}; see {b.workdir / 'broker.log'}", EXIT_FAILURE)
    b.stop()


@app.command()
def cloud(
    ctx: typer.Context,
    host: Annotated[str, opt("Interface to listen on.", "HOST")] = "127.0.0.1",
    port: Annotated[int, opt("HTTP port.", "PORT")] = 8000,
    db: Annotated[str, opt("sqlite:///FILE or postgresql://user@host/db", "DB")] = "sqlite:///iotfl.db",
    fleet: Annotated[str, opt("Fleet name.", "FLEET")] = "default",
    dataset: Annotated[
        str, opt("Held-out evaluation set and model shape: digits | sensors | har | csv:PATH", "DATASET")
    ] = "digits",
    seed: Annotated[int, opt("Seed of the data split and the initial model.", "SEED")] = 0,
    rounds: Annotated[int, opt("Global rounds to run.", "ROUNDS", min=1)] = 20,
    gateway_token: Annotated[
        list[str] | None,
        typer.Option(help="gw=SECRET, repeatable; or IOTFL_GATEWAY_TOKENS='gw0=a,gw1=b'.", show_default=False),
    ] = None,
    gateway_token_hash: Annotated[
        list[str] | None,
        typer.Option(
            help="gw=SHA256HEX of its token, repeatable; or IOTFL_GATEWAY_TOKEN_HASHES (iotfl provision fleet).",
            show_default=False,
        ),
    ] = None,
    tls_cert: Annotated[Path | None, opt("PEM server certificate: serve https (needs --tls-key).", "TLS_CERT")] = None,
    tls_key: Annotated[Path | None, opt("PEM private key of --tls-cert.", "TLS_KEY")] = None,
    min_gateways: Annotated[
        int, opt("Gateways that must check in before round 1's clock starts.", "MIN_GATEWAYS", min=1)
    ] = 1,
    round_timeout: Annotated[float, opt("Round deadline in seconds.", "ROUND_TIMEOUT")] = 60.0,
    lr: Annotated[float, opt("Local learning rate sent to devices.", "LR")] = 0.05,
    epochs: Annotated[int, opt("Local epochs sent to devices.", "EPOCHS")] = 2,
    batch: Annotated[int, opt("Local batch size sent to devices.", "BATCH")] = 8,
    chunk: Annotated[int, opt("Quantization chunk length.", "CHUNK")] = 256,
    min_battery: Annotated[
        float, opt("Battery floor (0..1) below which devices should not train.", "MIN_BATTERY")
    ] = 0.1,
    gateway_rounds: Annotated[int, opt("Local aggregation rounds per global round.", "GATEWAY_ROUNDS", min=1)] = 1,
    server_lr: Annotated[float, opt("Server learning rate applied to the averaged delta.", "SERVER_LR")] = 1.0,
    mode: Annotated[
        str, opt("sync | async: whether gateways count updates of earlier rounds, staleness-weighted.", "MODE")
    ] = "sync",
    workers: Annotated[
        int, opt("Worker processes; more than one needs a PostgreSQL --db (SQLite keeps one).", "WORKERS", min=1)
    ] = 1,
    aggregation: AggregationOpt = "fedavg",
    clip_norm: ClipNormOpt = 0.0,
    trim: TrimOpt = 0.2,
    krum_f: KrumFOpt = 0.2,
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the cloud aggregator: global FedAvg, evaluation, model versions, REST status and dashboard."""
    from cloud.settings import CloudSettings

    settings = settings_for(
        ctx,
        CloudSettings,
        config,
        locals(),
        gateway_tokens=gateway_token or None,
        gateway_token_hashes=gateway_token_hash or None,
    )
    try:
        from cloud.server import serve
    except ImportError as exc:
        missing_extra("cloud", exc)
    setup_logging(verbose)
    try:
        serve(settings, load_dataset(settings.dataset, settings.seed))
    except ValueError as exc:
        fail(str(exc))


@app.command()
def gateway(
    ctx: typer.Context,
    id: Annotated[str, opt("This gateway's id, e.g. gw0.", "ID")] = "",
    broker: Annotated[str, opt("mqtt://host:port or mqtts://host:port", "BROKER")] = "mqtt://127.0.0.1:1883",
    cloud: Annotated[str, opt("The cloud's base URL.", "CLOUD")] = "http://127.0.0.1:8000",
    token: Annotated[str, opt("Bearer token the cloud knows this gateway by.", "TOKEN", show_default=False)] = "",
    broker_ca: Annotated[
        Path | None, opt("CA file the mqtts:// broker certificate must chain to (default: system CAs).", "BROKER_CA")
    ] = None,
    cloud_ca: Annotated[
        Path | None, opt("CA file the https:// cloud certificate must chain to (default: system CAs).", "CLOUD_CA")
    ] = None,
    fleet: Annotated[str, opt("Fleet name.", "FLEET")] = "default",
    quorum: Annotated[
        int, opt("Close a round after this many updates (0 = when every live device answered).", "QUORUM", min=0)
    ] = 0,
    quorum_fraction: Annotated[
        float,
        opt(
            "Close a round once ceil(F × live devices) updates were accepted (0 = off).",
            "QUORUM_FRACTION",
            min=0,
            max=1,
        ),
    ] = 0.0,
    round_timeout: Annotated[float, opt("Seconds a (sub-)round waits for devices.", "ROUND_TIMEOUT")] = 30.0,
    state_dir: Annotated[Path, opt("Where the gateway keeps its state.", "STATE_DIR")] = Path("."),
    report_interval: Annotated[
        float,
        opt(
            "Seconds between reports of round progress and device statuses to the cloud's dashboard (0 = none).",
            "REPORT_INTERVAL",
            min=0,
            max=3600,
        ),
    ] = 2.0,
    aggregation: AggregationOpt = "fedavg",
    clip_norm: ClipNormOpt = 0.0,
    trim: TrimOpt = 0.2,
    krum_f: KrumFOpt = 0.2,
    enc: Annotated[
        str,
        opt(
            "Update encoding the tasks name: int8 | int4 | topk | f32 (empty: none named, devices use their own). "
            "Always accepted.",
            "ENC",
        ),
    ] = "",
    topk: TopkOpt = 0.05,
    accept_enc: Annotated[
        str, opt("Comma-separated update encodings accepted besides --enc (others are rejected 'enc').", "ACCEPT_ENC")
    ] = "int8,int4,topk",
    device_keys: Annotated[
        Path | None,
        opt(
            'JSON {"<dev>": "<64 hex>"} of this gateway\'s device keys (mode 0600): every update must be signed; '
            "re-read when it changes.",
            "DEVICE_KEYS",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int,
        opt("Serve Prometheus metrics at http://HOST:PORT/metrics (0 = off).", "METRICS_PORT", min=0, max=65535),
    ] = 0,
    metrics_host: Annotated[str, opt("Address the metrics port binds to.", "METRICS_HOST")] = "127.0.0.1",
    worker_id: Annotated[
        str, opt("Scale-out: this worker's id among the gateway's workers; posts as <id>-<worker-id>.", "WORKER_ID")
    ] = "",
    share_group: Annotated[
        str, opt("Scale-out: share the `up` messages with this MQTT 5 shared-subscription group.", "SHARE_GROUP")
    ] = "",
    dedup: Annotated[
        str, opt("Where workers claim updates: local (one process) or redis://host:port/db.", "DEDUP")
    ] = "local",
    parent: Annotated[
        str, opt("Fog tier: post to this parent gateway (`iotfl fog`) instead of --cloud.", "PARENT")
    ] = "",
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a gateway: collect device updates over MQTT, aggregate them, forward one aggregate per round.

    Several workers may share one gateway id (--worker-id, --share-group, --dedup redis://…), and a gateway may
    post to a parent gateway (--parent) instead of the cloud: docs/scale-out.md."""
    from gateway.metrics import MetricsError
    from gateway.service import run
    from gateway.settings import GatewaySettings
    from gateway.state_db import StateError

    settings = settings_for(ctx, GatewaySettings, config, locals())
    setup_logging(verbose)
    try:
        run(settings, stop_event())
    except (MetricsError, StateError) as exc:
        fail(str(exc))


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
