"""A fleet provisioned by ``iotfl provision fleet`` (gw0: d0000, d0002; gw1: d0001) with mosquitto running the
``iotfl.conf`` it generated (TLS listener, password file, ACL), for the security tests of every package."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from iotfl.broker import Broker, free_port, mosquitto_path, start_configured
from iotfl.provision_fleet import FleetProvisionSettings, provision_fleet

FLEET = "F"


@dataclass
class Fleet:
    out: Path
    broker: Broker

    @property
    def ca(self) -> Path:
        return self.out / "ca" / "ca.crt"

    def password(self, user: str) -> str:
        state = json.loads((self.out / "fleet.json").read_text())
        if user == "ops":
            return state["ops"]["password"]
        if user in state["gateways"]:
            return state["gateways"][user]["password"]
        return next(g["devices"][user]["password"] for g in state["gateways"].values() if user in g["devices"])


@contextmanager
def provisioned_fleet(tmp: Path) -> Iterator[Fleet]:
    """A fleet provisioned under ``tmp`` and mosquitto running its generated iotfl.conf (stopped on exit)."""
    if mosquitto_path() is None:
        pytest.fail("mosquitto is not installed: run `apt-get install -y mosquitto`")
    port = free_port()
    settings = FleetProvisionSettings(
        fleet=FLEET,
        gateway=["gw0:2", "gw1:1"],  # gw0: d0000, d0002; gw1: d0001
        broker=f"mqtts://127.0.0.1:{port}",
        cloud="https://127.0.0.1:8443",
        out=tmp / "prov",
    )
    provision_fleet(settings)
    broker = start_configured(tmp / "prov" / "mosquitto" / "iotfl.conf", port, tmp / "broker")
    try:
        yield Fleet(tmp / "prov", broker)
    finally:
        broker.stop()
