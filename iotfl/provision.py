"""``iotfl provision device``: a board's ``config.json`` (ids, broker, credentials, Wi-Fi, RAM class, battery,
OTA key) and the mosquitto password-file line its operator adds to the broker.

The schema of ``config.json`` is firmware/config.py's (documented in docs/firmware.md); ``iotfl flash`` checks a
config with that very module before copying it, and the tests check every config written here the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flcore.endpoints import parse_broker_url
from flcore.resources import RAM_CLASSES
from flcore.topics import check_id, is_valid_id

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
# the broker's CA certificate, next to config.json on the host and in the board's root (iotfl flash copies it)
CA_NAME = "ca.crt"
OTA_KEY_BYTES = 32
MIN_OTA_KEY_BYTES = 16
# mosquitto 2.x password files: "$7$" = PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte hash, iteration count inline.
PBKDF2_ITERATIONS = 1000
_SALT_BYTES = 12
# A LiPo cell: 3.3 V counts as empty, 4.2 V as full (boards brown out below ~3.3 V anyway).
ADC_EMPTY_V = 3.3
ADC_FULL_V = 4.2


class ProvisionError(ValueError):
    """A provisioning problem worth one clear line: bad input, or a file that must not be overwritten."""


def parse_battery(spec: str) -> dict[str, Any]:
    """``adc:PIN:DIVIDER[:EMPTY_V:FULL_V]`` or ``fixed:LEVEL`` (0..1) → the config's ``battery`` object."""
    kind, _, rest = spec.strip().partition(":")
    parts = rest.split(":") if rest else []
    try:
        if kind == "fixed" and len(parts) == 1:
            level = float(parts[0])
            if not 0.0 <= level <= 1.0:
                raise ValueError
            return {"source": "fixed", "value": level}
        if kind == "adc" and len(parts) in (2, 4):
            pin, divider = int(parts[0]), float(parts[1])
            empty_v, full_v = (float(parts[2]), float(parts[3])) if len(parts) == 4 else (ADC_EMPTY_V, ADC_FULL_V)
            if pin < 0 or not 0.01 <= divider <= 100 or not 0 < empty_v < full_v:
                raise ValueError
            return {"source": "adc", "pin": pin, "divider": divider, "v_empty": empty_v, "v_full": full_v}
    except ValueError:
        pass
    raise ValueError(
        f"battery {spec!r} must be adc:PIN:DIVIDER[:EMPTY_V:FULL_V] (e.g. adc:34:2.0) or fixed:LEVEL with LEVEL in 0..1"
    )


def parse_ota_key(text: str) -> str:
    """A fleet OTA key as lower-case hex (at least 16 bytes), or ValueError."""
    key = text.strip().lower()
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        raise ValueError("the OTA key must be hexadecimal (e.g. 64 hex digits for 32 bytes)") from None
    if len(raw) < MIN_OTA_KEY_BYTES:
        raise ValueError(f"the OTA key must be at least {MIN_OTA_KEY_BYTES} bytes ({2 * MIN_OTA_KEY_BYTES} hex digits)")
    return key


class BoardSettings(BaseSettings):
    """What a board's config.json holds beyond its identity: Wi-Fi, RAM class and battery (``IOTFL_<NAME>``)."""

    model_config = SettingsConfigDict(env_prefix="IOTFL_", extra="ignore")

    wifi_ssid: str | None = None
    wifi_password: str | None = Field(None, repr=False)
    ram_class: str = "class2"
    battery: str = "fixed:1.0"

    @field_validator("wifi_ssid")
    @classmethod
    def _ssid(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= len(value.encode()) <= 32:
            raise ValueError("a Wi-Fi SSID is 1 to 32 bytes")
        return value

    @field_validator("wifi_password")
    @classmethod
    def _wpa(cls, value: str | None) -> str | None:
        # WPA2 passphrases are 8..63 characters (64 hex digits is the raw key); empty means an open network
        raw_key = len(value or "") == 64 and all(c in "0123456789abcdefABCDEF" for c in value or "")
        if value and not (8 <= len(value) <= 63 or raw_key):
            raise ValueError("a Wi-Fi password is 8 to 63 characters, 64 hex digits, or empty for an open network")
        return value

    @field_validator("ram_class")
    @classmethod
    def _ram(cls, value: str) -> str:
        if value not in RAM_CLASSES:
            raise ValueError(f"unknown RAM class {value!r}; known: {', '.join(RAM_CLASSES)}")
        return value

    @field_validator("battery")
    @classmethod
    def _battery(cls, value: str) -> str:
        parse_battery(value)
        return value.strip()

    @model_validator(mode="after")
    def _wifi_pair(self) -> BoardSettings:
        if self.wifi_password is not None and self.wifi_ssid is None:
            raise ValueError("--wifi-password needs --wifi-ssid")
        return self


class ProvisionSettings(BoardSettings):
    """What ``iotfl provision device`` needs; each field also reads ``IOTFL_<NAME>`` and ``--config``."""

    id: str
    gateway: str
    fleet: str = "default"
    broker: str
    username: str | None = None
    password: str | None = Field(None, repr=False)
    ota_key: str | None = Field(None, repr=False)
    ota_key_file: Path | None = None
    ca_cert: Path | None = None
    out: Path | None = None

    @field_validator("id")
    @classmethod
    def _dev(cls, value: str) -> str:
        return check_id(value, "device id")

    @field_validator("gateway")
    @classmethod
    def _gw(cls, value: str) -> str:
        return check_id(value, "gateway id")

    @field_validator("fleet")
    @classmethod
    def _fleet(cls, value: str) -> str:
        return check_id(value, "fleet")

    @field_validator("username")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        # also keeps ':' and newlines out of the mosquitto password-file line
        return None if value is None else check_id(value, "username")

    @field_validator("password")
    @classmethod
    def _password(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "\r\n\0")):
            raise ValueError("the broker password must be non-empty and on one line")
        return value

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str) -> str:
        parse_broker_url(value)
        return value.strip()

    @field_validator("ota_key")
    @classmethod
    def _ota(cls, value: str | None) -> str | None:
        return None if value is None else parse_ota_key(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> ProvisionSettings:
        tls = parse_broker_url(self.broker).tls
        if tls and self.ca_cert is None:
            raise ValueError("an mqtts:// broker needs --ca-cert FILE (the CA that signed the broker's certificate)")
        if self.ca_cert is not None and not tls:
            raise ValueError("--ca-cert is for an mqtts:// broker")
        return self

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else Path("provision") / self.fleet / self.id

    @property
    def key_file(self) -> Path:
        return self.ota_key_file if self.ota_key_file is not None else Path("provision") / self.fleet / "ota.key"


def generate_password() -> str:
    """A random broker password: 24 URL-safe characters (144 bits), no quoting needed in shells or files."""
    return secrets.token_urlsafe(18)


def passwd_line(user: str, password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The mosquitto 2.x password-file line (``user:$7$…``) that ``mosquitto_passwd`` would write."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{user}:$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


@dataclass(frozen=True)
class BoardIdentity:
    """Who a board is and how it logs in: its ids, the broker URL it reaches, its secrets."""

    dev: str
    gw: str
    fleet: str
    broker: str
    user: str
    password: str = field(repr=False)
    ota_key: str = field(repr=False)
    hmac: str | None = field(default=None, repr=False)  # 64 hex digits: the board signs its updates


def device_config(board: BoardSettings, who: BoardIdentity) -> dict[str, Any]:
    """The board's config.json as a dict (pure: no files, no randomness)."""
    address = parse_broker_url(who.broker)
    wifi = None
    if board.wifi_ssid is not None:
        wifi = {"ssid": board.wifi_ssid, "password": board.wifi_password or ""}
    broker = {"host": address.host, "port": address.port, "tls": address.tls}
    broker.update(user=who.user, password=who.password)
    if address.tls:
        broker["ca"] = CA_NAME
    config = {
        "dev": who.dev,
        "gw": who.gw,
        "fleet": who.fleet,
        "broker": broker,
        "wifi": wifi,
        "ram_class": board.ram_class,
        "battery": parse_battery(board.battery),
        "ota": {"key": who.ota_key},
    }
    if who.hmac is not None:
        config["hmac"] = who.hmac
    return config


def write_private(path: Path, text: str, force: bool = False) -> None:
    """Write ``text`` to ``path`` with mode 0600, atomically; refuse an existing file unless ``force``."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails when the target exists: no window in which it could be clobbered
            except FileExistsError:
                raise ProvisionError(f"{path} already exists (pass --force to overwrite it)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fleet_ota_key(path: Path) -> tuple[str, bool]:
    """The fleet's OTA key from ``path``, creating a random one (mode 0600) when the file does not exist yet."""
    try:
        return parse_ota_key(path.read_text()), False
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ProvisionError(f"cannot read the OTA key file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ProvisionError(f"OTA key file {path}: {exc}") from None
    key = secrets.token_hex(OTA_KEY_BYTES)
    try:
        write_private(path, key + "\n")
    except ProvisionError:  # created by a concurrent run in between: use that one
        return fleet_ota_key(path)
    return key, True


def read_ca_cert(path: Path) -> str:
    """A PEM certificate file's text (what MicroPython's ssl loads), or ProvisionError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProvisionError(f"cannot read the CA certificate {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ProvisionError(f"{path} is not a PEM certificate (no BEGIN CERTIFICATE line)")
    return data.decode("ascii", errors="replace")


@dataclass(frozen=True)
class Provisioned:
    """What ``provision_device`` wrote and what the operator must do next."""

    config_path: Path
    user: str
    password_generated: bool
    passwd_line: str
    ota_key_file: Path | None
    ota_key_created: bool


def provision_device(settings: ProvisionSettings, force: bool = False) -> Provisioned:
    """Write the board's config.json (0600) under ``settings.out_dir``; ProvisionError on refusal."""
    address = parse_broker_url(settings.broker)
    user = settings.username or address.username or settings.id
    if not is_valid_id(user):
        raise ProvisionError(f"broker user name {user!r} must match [A-Za-z0-9_-]{{1,64}}")
    password = settings.password or address.password
    generated = password is None
    if password is None:
        password = generate_password()
    path = settings.out_dir / CONFIG_NAME
    if path.exists() and not force:
        # checked before a new fleet key is created, so a refused run leaves nothing behind
        raise ProvisionError(f"{path} already exists (pass --force to overwrite it)")
    ca_text = None if settings.ca_cert is None else read_ca_cert(settings.ca_cert)
    key_file, created = None, False
    if settings.ota_key is not None:
        ota_key = settings.ota_key
    else:
        key_file = settings.key_file
        ota_key, created = fleet_ota_key(key_file)
    who = BoardIdentity(settings.id, settings.gateway, settings.fleet, settings.broker, user, password, ota_key)
    config = device_config(settings, who)
    if ca_text is not None:
        write_private(settings.out_dir / CA_NAME, ca_text, force=True)
    write_private(path, json.dumps(config, indent=2) + "\n", force=force)
    log.info("wrote %s", path)
    return Provisioned(path, user, generated, passwd_line(user, password), key_file, created)


__all__ = [
    "BoardIdentity",
    "BoardSettings",
    "CA_NAME",
    "CONFIG_NAME",
    "Provisioned",
    "ProvisionError",
    "ProvisionSettings",
    "device_config",
    "fleet_ota_key",
    "generate_password",
    "parse_battery",
    "parse_ota_key",
    "passwd_line",
    "provision_device",
    "write_private",
]
