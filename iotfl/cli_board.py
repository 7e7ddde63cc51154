"""Board commands: ``iotfl provision``, ``iotfl flash`` and ``iotfl ota``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from iotfl.cli_common import EXIT_FAILURE, ConfigOpt, err, fail, missing_extra, opt, progress_bars, settings_for

if TYPE_CHECKING:
    from iotfl.provision_fleet import FleetResult

provision_app = typer.Typer(help="Provision boards: per-device firmware config and broker credentials.")


@provision_app.command("device")
def provision_device(
    ctx: typer.Context,
    id: Annotated[str, opt("Device id, e.g. dev7 (also its broker user name).", "ID")] = "",
    gateway: Annotated[str, opt("The gateway this board reports to, e.g. gw0.", "GATEWAY")] = "",
    fleet: Annotated[str, opt("Fleet name.", "FLEET")] = "default",
    broker: Annotated[str, opt("mqtt://host:port (mqtts:// with TLS) as the board reaches it.", "BROKER")] = "",
    username: Annotated[str | None, opt("Broker user name [default: the device id].", "USERNAME")] = None,
    password: Annotated[
        str | None, opt("Broker password [default: a random one].", "PASSWORD", show_default=False)
    ] = None,
    wifi_ssid: Annotated[str | None, opt("Wi-Fi network the board joins.", "WIFI_SSID")] = None,
    wifi_password: Annotated[str | None, opt("Wi-Fi password.", "WIFI_PASSWORD", show_default=False)] = None,
    ram_class: Annotated[str, opt("class0 | class1 | class2 | constrained", "RAM_CLASS")] = "class2",
    battery: Annotated[str, opt("adc:PIN:DIVIDER[:EMPTY_V:FULL_V] | fixed:LEVEL", "BATTERY")] = "fixed:1.0",
    ota_key: Annotated[
        str | None, opt("Fleet OTA key, hex [default: from --ota-key-file].", "OTA_KEY", show_default=False)
    ] = None,
    ota_key_file: Annotated[
        Path | None,
        opt("Fleet OTA key file, created when missing [default: provision/<fleet>/ota.key].", "OTA_KEY_FILE"),
    ] = None,
    ca_cert: Annotated[
        Path | None, opt("PEM CA certificate of an mqtts:// broker (copied next to config.json).", "CA_CERT")
    ] = None,
    out: Annotated[Path | None, opt("Output folder [default: provision/<fleet>/<id>].", "OUT")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing config.json.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Write a board's config.json (mode 0600) and print the broker password line to add."""
    from iotfl.provision import ProvisionError, ProvisionSettings
    from iotfl.provision import provision_device as provision

    settings = settings_for(ctx, ProvisionSettings, config, locals())
    try:
        done = provision(settings, force=force)
    except ProvisionError as exc:
        fail(str(exc))
    out_console = Console(soft_wrap=True, highlight=False, markup=False)
    out_console.print(f"wrote {done.config_path}")
    if done.ota_key_created:
        out_console.print(f"created the fleet OTA key {done.ota_key_file} (keep it: it signs firmware updates)")
    verb = "generated a password; add" if done.password_generated else "add"
    out_console.print(f"{verb} this line to the broker's password file (e.g. /etc/mosquitto/iotfl.passwd):")
    print(done.passwd_line)
    if done.user != settings.id:
        out_console.print(f"note: deploy/acl.example expects the user name to be the device id ({settings.id})")


def flash_cmd(
    port: Annotated[str, opt("Serial port of the board.", "PORT")] = "/dev/ttyUSB0",
    chip: Annotated[str, opt("esp32 | esp32s3 | rp2", "CHIP")] = "esp32",
    micropython_image: Annotated[
        Path | None, opt("MicroPython firmware to write first (.bin for ESP32, .uf2 for rp2).", "MICROPYTHON_IMAGE")
    ] = None,
    device_config: Annotated[
        Path | None, opt("The board's config.json from `iotfl provision`.", "DEVICE_CONFIG")
    ] = None,
    firmware_dir: Annotated[Path | None, opt("Firmware sources [default: the bundled ones].", "FIRMWARE_DIR")] = None,
    build_dir: Annotated[
        Path | None, opt("Where the .mpy files go [default: ~/.cache/iotfl/mpy].", "BUILD_DIR")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print every command instead of running it.")] = False,
) -> None:
    """Flash a board over serial: MicroPython (esptool), umqtt.simple, the compiled firmware and its config."""
    from iotfl.flash import FlashError, describe, flash

    if device_config is None:
        fail("--device-config is required (write one with `iotfl provision device`)")
    try:
        failure = flash(port, chip, micropython_image, device_config, dry_run, Console(), firmware_dir, build_dir)
    except FlashError as exc:
        fail(str(exc))
    if failure is not None:
        err.print(f"[bold red]error:[/] {escape(describe(failure))}", highlight=False)
        raise typer.Exit(EXIT_FAILURE)


ota_app = typer.Typer(help="Firmware updates over MQTT for the boards (signed, chunked, rolled back on failure).")


@ota_app.command("publish")
def ota_publish(
    version: Annotated[str, opt("Firmware version, e.g. 1.2.0 (part of the topic).", "OTA_VERSION")],
    broker: Annotated[
        str, opt("mqtt://user:pass@host:port of the fleet's broker.", "BROKER")
    ] = "mqtt://127.0.0.1:1883",
    fleet: Annotated[str, opt("Fleet name.", "FLEET")] = "default",
    key_file: Annotated[Path, opt("The fleet OTA key (written by `iotfl provision device`).", "OTA_KEY_FILE")] = Path(
        "provision/default/ota.key"
    ),
    firmware_dir: Annotated[Path | None, opt("Firmware sources [default: the bundled ones].", "FIRMWARE_DIR")] = None,
    serial: Annotated[
        int | None, typer.Option(help="Image serial; boards take only a higher one [default: now].")
    ] = None,
    tls_ca: Annotated[Path | None, opt("CA certificate of an mqtts:// broker.", "TLS_CA")] = None,
) -> None:
    """Sign the firmware with the fleet key and publish it: chunks first, then the manifest (retained, QoS 1)."""
    from iotfl.flash import firmware_dir as bundled
    from iotfl.ota import build_image, image_files, publish_image

    try:
        key = key_file.read_text().strip()
    except OSError as exc:
        fail(f"cannot read the OTA key {key_file}: {exc.strerror}")
    try:
        image = build_image(image_files(firmware_dir or bundled()), version, key, serial=serial)
        sent = publish_image(broker, image, fleet=fleet, tls_ca=str(tls_ca) if tls_ca else None)
    except ValueError as exc:
        fail(str(exc))
    except (ConnectionError, TimeoutError) as exc:
        fail(str(exc), EXIT_FAILURE)
    Console().print(
        f"published firmware {version} (serial {image.serial}): {len(image.files)} files, "
        f"{len(image.chunks)} chunks, {sent:,} bytes to fleet {fleet}"
    )


@provision_app.command("fleet")
def provision_fleet_cmd(
    ctx: typer.Context,
    fleet: Annotated[str, opt("Fleet name.", "FLEET")] = "default",
    gateway: Annotated[
        list[str] | None,
        typer.Option(
            help="GW:COUNT (devices d0000… dealt round-robin) or GW=DEV1,DEV2 (named devices); repeatable. "
            "COUNT is the gateway's total: re-running with a larger one adds devices.",
            show_default=False,
        ),
    ] = None,
    broker: Annotated[
        str | None, opt("mqtts://HOST:PORT as clients reach it [default: the folder's].", "BROKER")
    ] = None,
    cloud: Annotated[str | None, opt("https://HOST:PORT of the cloud [default: the folder's].", "CLOUD")] = None,
    rotate: Annotated[
        list[str] | None,
        typer.Option(help="New secrets for this device, gateway or `ops` (repeatable).", show_default=False),
    ] = None,
    out: Annotated[Path | None, opt("Output folder [default: provision/<fleet>].", "OUT")] = None,
    broker_dir: Annotated[
        Path | None, opt("Where mosquitto/ will live on the broker host [default: here].", "BROKER_DIR")
    ] = None,
    gateway_dir: Annotated[
        Path | None, opt("Where gateways/<gw>/ will live on each gateway [default: here].", "GATEWAY_DIR")
    ] = None,
    cloud_dir: Annotated[
        Path | None, opt("Where cloud/ will live on the cloud host [default: here].", "CLOUD_DIR")
    ] = None,
    wifi_ssid: Annotated[str | None, opt("Wi-Fi network every board joins.", "WIFI_SSID")] = None,
    wifi_password: Annotated[str | None, opt("Wi-Fi password.", "WIFI_PASSWORD", show_default=False)] = None,
    ram_class: Annotated[str, opt("class0 | class1 | class2 | constrained", "RAM_CLASS")] = "class2",
    battery: Annotated[str, opt("adc:PIN:DIVIDER[:EMPTY_V:FULL_V] | fixed:LEVEL", "BATTERY")] = "fixed:1.0",
    config: ConfigOpt = None,
) -> None:
    """Provision a whole fleet: CA and TLS certificates, broker logins and ACL, cloud tokens, device keys, configs."""
    try:
        from iotfl.provision_fleet import FleetProvisionSettings, provision_fleet
    except ImportError as exc:
        missing_extra("provision", exc)
    from iotfl.provision import ProvisionError

    settings = settings_for(ctx, FleetProvisionSettings, config, locals(), gateway=gateway, rotate=rotate)
    with progress_bars() as bar:
        task = bar.add_task("device files written", total=None)
        try:
            done = provision_fleet(settings, progress=lambda n, total: bar.update(task, completed=n, total=total))
        except ProvisionError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"cannot write under {settings.out_dir}: {exc.strerror or exc}", EXIT_FAILURE)
    _fleet_summary(done)


def _fleet_summary(done: FleetResult) -> None:
    from rich.table import Table

    state, changes = done.state, done.changes
    table = Table(title=f"fleet {state.fleet}: broker {state.broker}, cloud {state.cloud}")
    for column in ("login", "devices", "new", "rotated", "files"):
        table.add_column(column)
    marks = set(changes.new), set(changes.rotated)
    table.add_row("ops", "", "yes" if "ops" in marks[0] else "", "yes" if "ops" in marks[1] else "", "ops.env")
    for gw, g in state.gateways.items():
        new = [d for d in g.devices if d in marks[0]]
        rotated = [d for d in g.devices if d in marks[1]]
        label = gw + (" (new)" if gw in marks[0] else " (rotated)" if gw in marks[1] else "")
        table.add_row(
            label,
            str(len(g.devices)),
            _few(new),
            _few(rotated),
            f"gateways/{gw}/",
        )
    console = Console(highlight=False)
    console.print(table)
    console.print(f"wrote {done.out}/ (fleet.json holds every secret: back it up; docs/security.md lists the files)")
    if changes.certs:
        console.print(f"new certificates: {', '.join(changes.certs)}")
    if done.ota_key_created:
        console.print(f"created the fleet OTA key {done.out / 'ota.key'}")
    for warning in done.warnings:
        err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False)


def _few(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{len(names)}: {names[0]} … {names[-1]}"
