"""``iotfl provision fleet``: every secret and config file of a fleet (fleet → gateways → devices) in one folder.

The folder's ``fleet.json`` (mode 0600) holds every secret; each run loads it, adds what the command asks for
(gateways, devices), rotates what ``--rotate`` names, saves it, and then rewrites every derived file from it. So a
re-run is idempotent (the same bytes everywhere), adding a device never touches another one's secrets, and a file
lost or edited by hand comes back. docs/security.md describes each file.

Device names: ``--gateway gw0:20`` means gateway gw0 has 20 devices in total; the missing ones are named
``d{i:04d}`` with the smallest free ``i``, dealt round-robin over the gateways of the command in their order (so
``--gateway gw0:25 --gateway gw1:25`` gives device ``i`` to ``gw{i mod 2}``, the simulator's layout);
``--gateway gw0=pump1,pump2`` names devices explicitly. Devices and gateways are never removed.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from flcore.endpoints import parse_broker_url
from flcore.topics import check_id, is_valid_id
from iotfl.fleet_files import (
    acl_text,
    cloud_env,
    gateway_env,
    keys_json,
    mosquitto_conf,
    ops_env,
    passwd_text,
    server_hosts,
)
from iotfl.fleet_state import OPS_USER, DeviceSecrets, FleetState, GatewaySecrets, Login
from iotfl.pki import KeyPair, cert_hosts, new_ca, server_cert, signed_by
from iotfl.provision import (
    CA_NAME,
    CONFIG_NAME,
    BoardIdentity,
    BoardSettings,
    ProvisionError,
    device_config,
    fleet_ota_key,
    write_private,
)

STATE_NAME = "fleet.json"
HMAC_BYTES = 32
TOKEN_BYTES = 32
_SPEC = re.compile(r"(?P<gw>[^:=]+)(?::(?P<count>\d+)|=(?P<devs>.*))?")


@dataclass(frozen=True)
class GatewaySpec:
    """One ``--gateway`` option: ``gw`` with ``count`` devices in total, or with the named ``devices``."""

    gw: str
    count: int | None = None
    devices: tuple[str, ...] = ()


def parse_gateway_spec(text: str) -> GatewaySpec:
    """``GW``, ``GW:COUNT`` or ``GW=DEV,DEV,...``; ValueError with the accepted forms."""
    m = _SPEC.fullmatch(text.strip())
    if m is None or not is_valid_id(m["gw"]):
        raise ValueError(f"gateway {text!r} must be GW, GW:COUNT or GW=DEV1,DEV2 (ids match [A-Za-z0-9_-]{{1,64}})")
    if m["devs"] is not None:
        devs = tuple(d.strip() for d in m["devs"].split(",") if d.strip())
        bad = [d for d in devs if not is_valid_id(d)]
        if bad or not devs:
            raise ValueError(f"gateway {text!r}: device ids must match [A-Za-z0-9_-]{{1,64}} (got {bad or 'none'})")
        return GatewaySpec(m["gw"], devices=devs)
    return GatewaySpec(m["gw"], int(m["count"]) if m["count"] is not None else None)


def _check_cloud_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"cloud URL {value!r} must be http(s)://host[:port]")
    if parts.username or parts.password:
        raise ValueError("the cloud URL must not hold credentials")
    return value.strip().rstrip("/")


def _check_broker_url(value: str) -> str:
    address = parse_broker_url(value)
    if address.username or address.password:
        raise ValueError("give the broker URL without credentials: provisioning makes one login per client")
    return value.strip().rstrip("/")


class FleetProvisionSettings(BoardSettings):
    """What ``iotfl provision fleet`` needs (board options apply to every device config it writes)."""

    fleet: str = "default"
    gateway: list[str] = Field(default_factory=list)
    broker: str | None = None
    cloud: str | None = None
    rotate: list[str] = Field(default_factory=list)
    out: Path | None = None
    # Where the files will live on the machines that use them (paths written into iotfl.conf and the env files).
    broker_dir: Path | None = None
    gateway_dir: Path | None = None
    cloud_dir: Path | None = None

    @field_validator("fleet")
    @classmethod
    def _fleet(cls, value: str) -> str:
        return check_id(value, "fleet")

    @field_validator("gateway")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        for spec in value:
            parse_gateway_spec(spec)
        return value

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str | None) -> str | None:
        return None if value is None else _check_broker_url(value)

    @field_validator("cloud")
    @classmethod
    def _cloud(cls, value: str | None) -> str | None:
        return None if value is None else _check_cloud_url(value)

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else Path("provision") / self.fleet

    def specs(self) -> list[GatewaySpec]:
        return [parse_gateway_spec(s) for s in self.gateway]


@dataclass(frozen=True)
class Generator:
    """Where new secrets come from (tests may pass deterministic ones)."""

    login: Callable[[str], Login] = Login.new
    hmac: Callable[[], str] = lambda: secrets.token_hex(HMAC_BYTES)
    token: Callable[[], str] = lambda: secrets.token_urlsafe(TOKEN_BYTES)


@dataclass
class Changes:
    """What one run did to the state, for the summary."""

    new: list[str] = field(default_factory=list)
    rotated: list[str] = field(default_factory=list)
    certs: list[str] = field(default_factory=list)


def _names(start: Iterable[str]) -> Iterator[str]:
    """d0000, d0001, … skipping the names in ``start``."""
    taken = set(start)
    i = 0
    while True:
        name = f"d{i:04d}"
        if name not in taken:
            taken.add(name)
            yield name
        i += 1


def plan(
    state: FleetState | None, settings: FleetProvisionSettings, gen: Generator = Generator()
) -> tuple[FleetState, Changes]:
    """The state after this run (``state`` is not modified); ProvisionError for a request that cannot be met."""
    changes = Changes()
    if state is None:
        if settings.broker is None or settings.cloud is None:
            raise ProvisionError("a new fleet needs --broker mqtts://HOST:PORT and --cloud https://HOST:PORT")
        state = FleetState(settings.fleet, settings.broker, settings.cloud, gen.login(OPS_USER))
        changes.new.append(OPS_USER)
    else:
        state = FleetState.from_json(state.to_json())  # a deep copy
        if state.fleet != settings.fleet:
            raise ProvisionError(f"the folder holds fleet {state.fleet!r}, not {settings.fleet!r}")
        state.broker = settings.broker or state.broker
        state.cloud = settings.cloud or state.cloud
    owner = state.device_gateway()
    wanted: dict[str, int] = {}
    for spec in settings.specs():
        if spec.gw in owner or spec.gw == OPS_USER:
            raise ProvisionError(f"{spec.gw!r} is already a device or the ops user; a gateway needs a name of its own")
        if spec.gw not in state.gateways:
            state.gateways[spec.gw] = GatewaySecrets(gen.login(spec.gw), gen.token())
            changes.new.append(spec.gw)
        for dev in spec.devices:
            if dev in state.gateways or dev == OPS_USER:
                raise ProvisionError(f"device {dev!r} has the name of a gateway or of the ops user")
            if owner.get(dev, spec.gw) != spec.gw:
                raise ProvisionError(f"device {dev!r} belongs to gateway {owner[dev]!r}, not {spec.gw!r}")
            if dev not in owner:
                state.gateways[spec.gw].devices[dev] = DeviceSecrets(gen.login(dev), gen.hmac())
                owner[dev] = spec.gw
                changes.new.append(dev)
        if spec.count is not None:
            have = len(state.gateways[spec.gw].devices)
            if spec.count < have:
                raise ProvisionError(
                    f"gateway {spec.gw!r} already has {have} devices; provisioning never removes one (use :{have} "
                    "or more)"
                )
            wanted[spec.gw] = wanted.get(spec.gw, 0) + spec.count - have
    names = _names(state.users())
    while any(wanted.values()):
        for gw in wanted:
            if wanted[gw]:
                dev = next(names)
                state.gateways[gw].devices[dev] = DeviceSecrets(gen.login(dev), gen.hmac())
                wanted[gw] -= 1
                changes.new.append(dev)
    owner = state.device_gateway()
    for who in dict.fromkeys(settings.rotate):
        if who == OPS_USER:
            state.ops = gen.login(OPS_USER)
        elif who in state.gateways:
            g = state.gateways[who]
            g.login, g.token = gen.login(who), gen.token()
        elif who in owner:
            state.gateways[owner[who]].devices[who] = DeviceSecrets(gen.login(who), gen.hmac())
        else:
            raise ProvisionError(f"--rotate {who}: no such device, gateway or ops user in fleet {state.fleet!r}")
        if who not in changes.new:
            changes.rotated.append(who)
    return state, changes


# -- rendering (pure) ----------------------------------------------------------------------------------------


def _write(path: Path, text: str, private: bool) -> None:
    """Atomically write ``text`` (mode 0600 or 0644) unless the file already holds exactly that."""
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == (0o600 if private else 0o644):
            return
    except (OSError, UnicodeDecodeError):
        pass
    write_private(path, text, force=True)
    if not private:
        path.chmod(0o644)


def _read_pair(folder: Path, stem: str) -> KeyPair | None:
    try:
        return KeyPair((folder / f"{stem}.key").read_text(), (folder / f"{stem}.crt").read_text())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProvisionError(f"cannot read {folder / stem}.key/.crt: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class FleetResult:
    """What a run wrote and changed."""

    out: Path
    state: FleetState
    changes: Changes
    ota_key_created: bool
    warnings: list[str]


def load_state(out: Path) -> FleetState | None:
    path = out / STATE_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProvisionError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return FleetState.from_json(text)
    except ValueError as exc:
        raise ProvisionError(f"{path} is damaged ({exc}); restore it from your backup") from None


def _pki(out: Path, state: FleetState, changes: Changes) -> tuple[KeyPair, KeyPair, KeyPair]:
    """The CA (made once) and the broker and cloud certificates, re-issued when their host names changed."""
    ca_dir = out / "ca"
    ca = _read_pair(ca_dir, "ca")
    if ca is None:
        ca = new_ca(state.fleet)
        _write(ca_dir / "ca.key", ca.key_pem, private=True)
        _write(ca_dir / CA_NAME, ca.cert_pem, private=False)
        changes.certs.append("CA")
    pairs = []
    for name, url in (("broker", state.broker), ("cloud", state.cloud)):
        hosts = server_hosts(url)
        pair = _read_pair(ca_dir, name)
        if pair is None or cert_hosts(pair.cert_pem) != hosts or not signed_by(pair.cert_pem, ca):
            pair = server_cert(ca, hosts[0], hosts)
            _write(ca_dir / f"{name}.key", pair.key_pem, private=True)
            _write(ca_dir / f"{name}.crt", pair.cert_pem, private=False)
            changes.certs.append(f"{name} ({', '.join(hosts)})")
        pairs.append(pair)
    return ca, pairs[0], pairs[1]


def provision_fleet(
    settings: FleetProvisionSettings,
    gen: Generator = Generator(),
    progress: Callable[[int, int], None] | None = None,
) -> FleetResult:
    """Load, extend and save the fleet's state, then (re)write every file derived from it. ``progress(done, total)``
    is called after each device's files (a thousand devices take seconds: the CLI shows a bar)."""
    out = settings.out_dir
    state, changes = plan(load_state(out), settings, gen)
    total, written = sum(len(g.devices) for g in state.gateways.values()), 0
    absolute = out.resolve()
    _write(out / STATE_NAME, state.to_json(), private=True)
    ota_key, ota_created = fleet_ota_key(out / "ota.key")
    ca, broker, cloud = _pki(out, state, changes)
    broker_dir = settings.broker_dir or absolute / "mosquitto"
    cloud_dir = settings.cloud_dir or absolute / "cloud"

    mq = out / "mosquitto"
    _write(mq / "iotfl.conf", mosquitto_conf(state, broker_dir), private=False)
    _write(mq / "passwd", passwd_text(state), private=True)
    _write(mq / "acl", acl_text(state), private=False)
    _write(mq / CA_NAME, ca.cert_pem, private=False)
    _write(mq / "server.crt", broker.cert_pem, private=False)
    _write(mq / "server.key", broker.key_pem, private=True)

    _write(out / "cloud" / "cloud.env", cloud_env(state, cloud_dir), private=True)
    _write(out / "cloud" / "server.crt", cloud.cert_pem, private=False)
    _write(out / "cloud" / "server.key", cloud.key_pem, private=True)
    _write(out / "ops.env", ops_env(state, absolute), private=True)

    everyone: dict[str, DeviceSecrets] = {}
    for gw, g in state.gateways.items():
        folder = out / "gateways" / gw
        gateway_dir = settings.gateway_dir / gw if settings.gateway_dir else absolute / "gateways" / gw
        _write(folder / "gateway.env", gateway_env(state, gw, gateway_dir), private=True)
        _write(folder / "device-keys.json", keys_json(g.devices), private=True)
        _write(folder / CA_NAME, ca.cert_pem, private=False)
        for dev, s in g.devices.items():
            who = BoardIdentity(dev, gw, state.fleet, state.broker, dev, s.login.password, ota_key, s.hmac)
            text = json.dumps(device_config(settings, who), indent=2) + "\n"
            _write(out / "devices" / dev / CONFIG_NAME, text, private=True)
            _write(out / "devices" / dev / CA_NAME, ca.cert_pem, private=False)
            written += 1
            if progress is not None:
                progress(written, total)
        everyone.update(g.devices)
    # every device's key in one file, for a simulated fleet (`iotfl fleet --provisioned`)
    _write(out / "device-keys.json", keys_json(everyone), private=True)

    warnings = []
    if not parse_broker_url(state.broker).tls:
        warnings.append(f"plain-text broker {state.broker}: passwords cross the network in clear (local demo only)")
    if not state.cloud.startswith("https:"):
        warnings.append(f"plain-text cloud {state.cloud}: gateway tokens cross the network in clear (local demo only)")
    os.chmod(out, 0o700)
    return FleetResult(out, state, changes, ota_created, warnings)


__all__ = [
    "FleetProvisionSettings",
    "FleetResult",
    "FleetState",
    "Generator",
    "GatewaySpec",
    "STATE_NAME",
    "load_state",
    "parse_gateway_spec",
    "plan",
    "provision_fleet",
]
