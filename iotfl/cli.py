"""The ``iotfl`` command: one subcommand per part of the stack.

Every flag also reads ``IOTFL_<FLAG>`` from the environment, then ``--config FILE`` (TOML, a ``[command]`` table or
top-level keys); flags win. Heavy imports (torch, FastAPI) happen inside the commands that need them, so
``iotfl gateway`` runs on a Raspberry Pi install without either.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.markup import escape

from iotfl.config import ConfigError, build

S = TypeVar("S", bound=BaseSettings)

app = typer.Typer(
    help="Federated learning for IoT fleets over MQTT: devices → gateways → cloud.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML file with settings (flags and IOTFL_* env win).", exists=False)
]


def _opt(help: str, env: str, **kw: Any) -> Any:
    return typer.Option(help=help, envvar=f"IOTFL_{env}", show_envvar=True, **kw)


def _given(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The flags the user set (on the command line or through IOTFL_*); the rest fall through to the config file."""
    # compared by name: typer vendors its own click, so the ParameterSource enum has no stable import path
    given = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name != "DEFAULT":
            given[name] = value
    return given


def _settings(ctx: typer.Context, cls: type[S], config: Path | None, values: dict[str, Any], **explicit: Any) -> S:
    """Settings for the command from its given flags, the environment and ``--config``, or exit with the reason."""
    flags = _given(ctx, {k: v for k, v in values.items() if k in cls.model_fields})
    flags.update({k: v for k, v in explicit.items() if v is not None})
    try:
        return build(cls, config, ctx.command.name or "", **flags)
    except ConfigError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # httpx logs every request at INFO: two lines a second from each polling gateway.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _stop_event() -> threading.Event:
    """An event set by SIGINT/SIGTERM, so services shut down cleanly instead of dying mid-write."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _dataset(spec: str, seed: int) -> Any:
    from iotfl.datasets import load

    try:
        return load(spec, seed)
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def demo(
    ctx: typer.Context,
    devices: Annotated[int, _opt("Simulated devices, each its own MQTT connection.", "DEVICES", min=1)] = 50,
    gateways: Annotated[int, _opt("Gateways gw0…gw{G-1}; device i belongs to gateway i mod G.", "GATEWAYS", min=1)] = 5,
    rounds: Annotated[int, _opt("Global rounds.", "ROUNDS", min=1)] = 20,
    dataset: Annotated[str, _opt("digits | sensors | har | csv:PATH", "DATASET")] = "digits",
    alpha: Annotated[float, _opt("Dirichlet α of the non-IID split (small = skewed).", "ALPHA", min=1e-6)] = 0.5,
    seed: Annotated[int, _opt("Seed for data, split, model init and devices.", "SEED")] = 0,
    broker: Annotated[
        str, _opt("auto (mosquitto if installed, else embedded) | embedded | mqtt://host:port", "BROKER")
    ] = "auto",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = None,
    battery: Annotated[bool, _opt("Battery model (drain, recharge, battery-aware selection).", "BATTERY")] = True,
    gateway_rounds: Annotated[
        int, _opt("Local aggregation rounds per global round at each gateway.", "GATEWAY_ROUNDS", min=1)
    ] = 1,
    lr: Annotated[float | None, _opt("Local SGD learning rate [default: per dataset].", "LR")] = None,
    epochs: Annotated[int | None, _opt("Local epochs per round [default: per dataset].", "EPOCHS")] = None,
    batch: Annotated[int | None, _opt("Local batch size [default: per dataset].", "BATCH")] = None,
    round_timeout: Annotated[float, _opt("Seconds before a round closes without everyone.", "ROUND_TIMEOUT")] = 30.0,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep logs, database and state here [default: a temp dir].")
    ] = None,
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the whole stack on this machine (broker, cloud, gateways, simulated fleet) over real MQTT and HTTP."""
    from iotfl.demo import DemoSettings, run_demo

    settings = _settings(ctx, DemoSettings, config, locals())
    _logging(verbose)
    dataset_obj = _dataset(settings.dataset, settings.seed)
    code = run_demo(settings, dataset_obj, json_path, workdir, Console())
    raise typer.Exit(code)


@app.command("broker")
def broker_cmd(
    port: Annotated[int, _opt("TCP port on 127.0.0.1.", "PORT")] = 1883,
    embedded: Annotated[
        bool, typer.Option(help="Use the embedded Python broker even if mosquitto is installed.")
    ] = False,
) -> None:
    """Run a local MQTT broker: mosquitto with a generated config, or the embedded broker without it."""
    from iotfl.broker import start_broker

    try:
        b = start_broker(port=port, prefer="embedded" if embedded else "auto")
    except RuntimeError as exc:
        _fail(str(exc))
    err.print(f"{b.kind} listening on {b.url} (logs in {b.workdir}); Ctrl-C stops it")
    stop = _stop_event()
    while not stop.wait(0.5):
        if b.proc.poll() is not None:
            _fail(f"{b.kind} exited with code {b.proc.returncode}; see {b.workdir / 'broker.log'}")
    b.stop()


@app.command()
def cloud(
    ctx: typer.Context,
    host: Annotated[str, _opt("Interface to listen on.", "HOST")] = "127.0.0.1",
    port: Annotated[int, _opt("HTTP port.", "PORT")] = 8000,
    db: Annotated[str, _opt("sqlite:///FILE or postgresql://user@host/db", "DB")] = "sqlite:///iotfl.db",
    fleet: Annotated[str, _opt("Fleet name.", "FLEET")] = "default",
    dataset: Annotated[
        str, _opt("Held-out evaluation set and model shape: digits | sensors | har | csv:PATH", "DATASET")
    ] = "digits",
    seed: Annotated[int, _opt("Seed of the data split and the initial model.", "SEED")] = 0,
    rounds: Annotated[int, _opt("Global rounds to run.", "ROUNDS", min=1)] = 20,
    gateway_token: Annotated[
        list[str] | None,
        typer.Option(help="gw=SECRET, repeatable; or IOTFL_GATEWAY_TOKENS='gw0=a,gw1=b'.", show_default=False),
    ] = None,
    min_gateways: Annotated[
        int, _opt("Gateways that must check in before round 1's clock starts.", "MIN_GATEWAYS", min=1)
    ] = 1,
    round_timeout: Annotated[float, _opt("Round deadline in seconds.", "ROUND_TIMEOUT")] = 60.0,
    lr: Annotated[float, _opt("Local learning rate sent to devices.", "LR")] = 0.05,
    epochs: Annotated[int, _opt("Local epochs sent to devices.", "EPOCHS")] = 2,
    batch: Annotated[int, _opt("Local batch size sent to devices.", "BATCH")] = 8,
    chunk: Annotated[int, _opt("Quantization chunk length.", "CHUNK")] = 256,
    min_battery: Annotated[
        float, _opt("Battery floor (0..1) below which devices should not train.", "MIN_BATTERY")
    ] = 0.1,
    gateway_rounds: Annotated[int, _opt("Local aggregation rounds per global round.", "GATEWAY_ROUNDS", min=1)] = 1,
    server_lr: Annotated[float, _opt("Server learning rate applied to the averaged delta.", "SERVER_LR")] = 1.0,
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the cloud aggregator: global FedAvg, evaluation, model versions, REST status and dashboard."""
    from cloud.settings import CloudSettings

    settings = _settings(ctx, CloudSettings, config, locals(), gateway_tokens=gateway_token or None)
    try:
        from cloud.server import serve
    except ImportError as exc:
        _fail(f"the cloud needs its extra: pip install 'iotfl[cloud]' ({exc.name} is missing)")
    _logging(verbose)
    try:
        serve(settings, _dataset(settings.dataset, settings.seed))
    except ValueError as exc:
        _fail(str(exc))


@app.command()
def gateway(
    ctx: typer.Context,
    id: Annotated[str, _opt("This gateway's id, e.g. gw0.", "ID")] = "",
    broker: Annotated[str, _opt("mqtt://host:port or mqtts://host:port", "BROKER")] = "mqtt://127.0.0.1:1883",
    cloud: Annotated[str, _opt("The cloud's base URL.", "CLOUD")] = "http://127.0.0.1:8000",
    token: Annotated[str, _opt("Bearer token the cloud knows this gateway by.", "TOKEN", show_default=False)] = "",
    fleet: Annotated[str, _opt("Fleet name.", "FLEET")] = "default",
    quorum: Annotated[
        int, _opt("Close a round after this many updates (0 = when every live device answered).", "QUORUM", min=0)
    ] = 0,
    round_timeout: Annotated[float, _opt("Seconds a (sub-)round waits for devices.", "ROUND_TIMEOUT")] = 30.0,
    state_dir: Annotated[Path, _opt("Where the gateway keeps its state.", "STATE_DIR")] = Path("."),
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a gateway: collect device updates over MQTT, aggregate them, forward one aggregate per round."""
    from gateway.service import run
    from gateway.settings import GatewaySettings

    settings = _settings(ctx, GatewaySettings, config, locals())
    _logging(verbose)
    run(settings, _stop_event())


@app.command()
def fleet(
    ctx: typer.Context,
    devices: Annotated[int, _opt("Simulated devices.", "DEVICES", min=1)] = 50,
    gateways: Annotated[int, _opt("Gateways gw0…gw{G-1}; device i joins gateway i mod G.", "GATEWAYS", min=1)] = 5,
    broker: Annotated[str, _opt("mqtt://host:port", "BROKER")] = "mqtt://127.0.0.1:1883",
    fleet: Annotated[str, _opt("Fleet name.", "FLEET")] = "default",
    dataset: Annotated[str, _opt("digits | sensors | har | csv:PATH", "DATASET")] = "digits",
    alpha: Annotated[float, _opt("Dirichlet α of the non-IID split.", "ALPHA")] = 0.5,
    seed: Annotated[int, _opt("Seed of data, split and devices.", "SEED")] = 0,
    battery: Annotated[bool, _opt("Battery model on/off.", "BATTERY")] = True,
    report: Annotated[Path | None, typer.Option(help="Write the fleet's JSON report here when it ends.")] = None,
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a fleet of simulated devices, each its own MQTT connection, until the cloud's last round."""
    try:
        from device_sim.fleet import run_fleet
        from device_sim.settings import FleetSettings
    except ImportError as exc:
        _fail(f"the simulator needs its extra: pip install 'iotfl[sim]' ({exc.name} is missing)")

    settings = _settings(ctx, FleetSettings, config, locals())
    _logging(verbose)
    result = run_fleet(settings, _dataset(settings.dataset, settings.seed), _stop_event())
    if report is not None:
        import json

        report.write_text(json.dumps(result.to_dict(), indent=2))


@app.command()
def status(
    cloud: Annotated[str, _opt("The cloud's base URL.", "CLOUD")] = "http://127.0.0.1:8000",
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON status.")] = False,
) -> None:
    """Show the cloud's status: round, model version, gateways and accuracy history."""
    from iotfl.status import show_status

    raise typer.Exit(show_status(cloud, as_json, Console(), err))


provision_app = typer.Typer(help="Provision boards: per-device firmware config and broker credentials.")
app.add_typer(provision_app, name="provision", no_args_is_help=True)


@provision_app.command("device")
def provision_device(
    ctx: typer.Context,
    id: Annotated[str, _opt("Device id, e.g. dev7 (also its broker user name).", "ID")] = "",
    gateway: Annotated[str, _opt("The gateway this board reports to, e.g. gw0.", "GATEWAY")] = "",
    fleet: Annotated[str, _opt("Fleet name.", "FLEET")] = "default",
    broker: Annotated[str, _opt("mqtt://host:port (mqtts:// with TLS) as the board reaches it.", "BROKER")] = "",
    username: Annotated[str | None, _opt("Broker user name [default: the device id].", "USERNAME")] = None,
    password: Annotated[
        str | None, _opt("Broker password [default: a random one].", "PASSWORD", show_default=False)
    ] = None,
    wifi_ssid: Annotated[str | None, _opt("Wi-Fi network the board joins.", "WIFI_SSID")] = None,
    wifi_password: Annotated[str | None, _opt("Wi-Fi password.", "WIFI_PASSWORD", show_default=False)] = None,
    ram_class: Annotated[str, _opt("class0 | class1 | class2 | constrained", "RAM_CLASS")] = "class2",
    battery: Annotated[str, _opt("adc:PIN:DIVIDER[:EMPTY_V:FULL_V] | fixed:LEVEL", "BATTERY")] = "fixed:1.0",
    ota_key: Annotated[
        str | None, _opt("Fleet OTA key, hex [default: from --ota-key-file].", "OTA_KEY", show_default=False)
    ] = None,
    ota_key_file: Annotated[
        Path | None,
        _opt("Fleet OTA key file, created when missing [default: provision/<fleet>/ota.key].", "OTA_KEY_FILE"),
    ] = None,
    ca_cert: Annotated[
        Path | None, _opt("PEM CA certificate of an mqtts:// broker (copied next to config.json).", "CA_CERT")
    ] = None,
    out: Annotated[Path | None, _opt("Output folder [default: provision/<fleet>/<id>].", "OUT")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing config.json.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Write a board's config.json (mode 0600) and print the broker password line to add."""
    from iotfl.provision import ProvisionError, ProvisionSettings
    from iotfl.provision import provision_device as provision

    settings = _settings(ctx, ProvisionSettings, config, locals())
    try:
        done = provision(settings, force=force)
    except ProvisionError as exc:
        _fail(str(exc))
    out_console = Console(soft_wrap=True, highlight=False, markup=False)
    out_console.print(f"wrote {done.config_path}")
    if done.ota_key_created:
        out_console.print(f"created the fleet OTA key {done.ota_key_file} (keep it: it signs firmware updates)")
    verb = "generated a password; add" if done.password_generated else "add"
    out_console.print(f"{verb} this line to the broker's password file (e.g. /etc/mosquitto/iotfl.passwd):")
    print(done.passwd_line)
    if done.user != settings.id:
        out_console.print(f"note: deploy/acl.example expects the user name to be the device id ({settings.id})")


@app.command("flash")
def flash_cmd(
    port: Annotated[str, _opt("Serial port of the board.", "PORT")] = "/dev/ttyUSB0",
    chip: Annotated[str, _opt("esp32 | esp32s3 | rp2", "CHIP")] = "esp32",
    micropython_image: Annotated[
        Path | None, _opt("MicroPython firmware to write first (.bin for ESP32, .uf2 for rp2).", "MICROPYTHON_IMAGE")
    ] = None,
    device_config: Annotated[
        Path | None, _opt("The board's config.json from `iotfl provision`.", "DEVICE_CONFIG")
    ] = None,
    firmware_dir: Annotated[Path | None, _opt("Firmware sources [default: the bundled ones].", "FIRMWARE_DIR")] = None,
    build_dir: Annotated[
        Path | None, _opt("Where the .mpy files go [default: ~/.cache/iotfl/mpy].", "BUILD_DIR")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print every command instead of running it.")] = False,
) -> None:
    """Flash a board over serial: MicroPython (esptool), umqtt.simple, the compiled firmware and its config."""
    from iotfl.flash import FlashError, describe, flash

    if device_config is None:
        _fail("--device-config is required (write one with `iotfl provision device`)")
    try:
        failure = flash(port, chip, micropython_image, device_config, dry_run, Console(), firmware_dir, build_dir)
    except FlashError as exc:
        _fail(str(exc))
    if failure is not None:
        err.print(f"[bold red]error:[/] {escape(describe(failure))}", highlight=False)
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
