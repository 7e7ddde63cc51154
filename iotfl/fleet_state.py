"""What ``fleet.json`` holds: a fleet's endpoints and every secret of it (broker logins, tokens, device keys)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flcore.topics import check_id
from iotfl.provision import generate_password, passwd_line

STATE_VERSION = 1
OPS_USER = "ops"


@dataclass
class Login:
    """A broker login: the password (given to the client) and its mosquitto password-file line (kept so that a
    re-run writes the same salt, i.e. the same file)."""

    password: str
    passwd: str

    @classmethod
    def new(cls, user: str) -> Login:
        password = generate_password()
        return cls(password, passwd_line(user, password))


@dataclass
class DeviceSecrets:
    login: Login
    hmac: str  # 64 hex digits, the device's update-signing key


@dataclass
class GatewaySecrets:
    login: Login
    token: str  # bearer token for the cloud, which keeps only its sha256
    devices: dict[str, DeviceSecrets] = field(default_factory=dict)


@dataclass
class FleetState:
    """What ``fleet.json`` holds: the endpoints and every secret of the fleet."""

    fleet: str
    broker: str
    cloud: str
    ops: Login
    gateways: dict[str, GatewaySecrets] = field(default_factory=dict)

    def device_gateway(self) -> dict[str, str]:
        return {dev: gw for gw, g in self.gateways.items() for dev in g.devices}

    def users(self) -> set[str]:
        return {OPS_USER, *self.gateways, *self.device_gateway()}

    def to_json(self) -> str:
        def login(x: Login) -> dict[str, str]:
            return {"password": x.password, "passwd": x.passwd}

        data = {
            "v": STATE_VERSION,
            "fleet": self.fleet,
            "broker": self.broker,
            "cloud": self.cloud,
            "ops": login(self.ops),
            "gateways": {
                gw: {
                    **login(g.login),
                    "token": g.token,
                    "devices": {d: {**login(s.login), "hmac": s.hmac} for d, s in g.devices.items()},
                }
                for gw, g in self.gateways.items()
            },
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> FleetState:
        """Parse ``fleet.json``; ValueError naming what is wrong."""
        try:
            data = json.loads(text)
            if data.get("v") != STATE_VERSION:
                raise ValueError(f"unsupported version {data.get('v')!r}")

            def login(x: dict[str, Any], user: str) -> Login:
                if not x["passwd"].startswith(f"{user}:$7$") or not x["password"]:
                    raise ValueError(f"the login of {user!r} is damaged")
                return Login(str(x["password"]), str(x["passwd"]))

            gateways = {}
            for gw, g in data["gateways"].items():
                devices = {}
                for dev, d in g["devices"].items():
                    bytes.fromhex(d["hmac"])
                    devices[check_id(dev, "device id")] = DeviceSecrets(login(d, dev), str(d["hmac"]))
                gateways[check_id(gw, "gateway id")] = GatewaySecrets(login(g, gw), str(g["token"]), devices)
            return cls(
                check_id(data["fleet"], "fleet"),
                str(data["broker"]),
                str(data["cloud"]),
                login(data["ops"], OPS_USER),
                gateways,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"missing or mistyped entry {exc}") from None
