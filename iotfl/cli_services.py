"""``iotfl broker``, ``iotfl cloud`` and ``iotfl gateway``: the long-running services of the stack, one per process.

Heavy imports (torch, FastAPI) happen inside the commands that need them, so ``iotfl gateway`` runs on a
Raspberry Pi install without either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from iotfl.cli_common import (
    EXIT_FAILURE,
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
    settings_for,
    setup_logging,
    stop_event,
)


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


def cloud_cmd(
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
    server_opt: ServerOptOpt = "fedavg",
    server_lr: ServerLrOpt = None,
    server_momentum: ServerMomentumOpt = None,
    server_beta2: ServerBeta2Opt = 0.99,
    server_eps: ServerEpsOpt = 1e-3,
    select: SelectOpt = None,
    widths: WidthsOpt = None,
    personal_epochs: Annotated[
        int,
        opt(
            "Epochs devices fine-tune a personal head (last layer) and report local held-out accuracies (0 = off).",
            "PERSONAL_EPOCHS",
            min=0,
            max=1000,
        ),
    ] = 0,
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


def gateway_cmd(
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
