"""A simulated fleet on a provisioned broker: per-device logins from the provisioned configs, in the simulator's
layout (device i on gateway i mod G), and the folder's CA and key file as defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_sim.population import device_id, gateway_id
from device_sim.provisioned import logins_for
from device_sim.settings import FleetSettings
from iotfl.provision_fleet import FleetProvisionSettings, provision_fleet


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prov") / "F"
    provision_fleet(
        FleetProvisionSettings(
            fleet="F", gateway=["gw0:3", "gw1:3"], broker="mqtts://127.0.0.1:8883", cloud="https://x:1", out=out
        )
    )
    return out


def layout(devices: int, gateways: int) -> dict[str, str]:
    return {device_id(i): gateway_id(i, gateways) for i in range(devices)}


def test_each_device_gets_its_own_login(folder: Path) -> None:
    logins = logins_for(folder, layout(6, 2))
    state = json.loads((folder / "fleet.json").read_text())
    for dev, (user, password) in logins.items():
        assert user == dev and password == state["gateways"][gateway_id(int(dev[1:]), 2)]["devices"][dev]["password"]
    assert logins_for(None, layout(6, 2)) == {}


def test_a_layout_the_folder_does_not_hold_is_refused(folder: Path) -> None:
    with pytest.raises(ValueError, match=r"7 simulated devices have no config .* \(first: d0006\)"):
        logins_for(folder, layout(13, 2))
    with pytest.raises(ValueError, match="device d0002 runs on gateway gw2 .* provisioned for gw0"):
        logins_for(folder, layout(6, 3))
    with pytest.raises(ValueError, match="holds no devices/ folder"):
        logins_for(folder / "ca", layout(1, 1))


def test_the_folder_supplies_ca_and_device_keys(folder: Path) -> None:
    settings = FleetSettings(devices=6, gateways=2, fleet="F", provisioned=folder)
    assert settings.tls_ca == str(folder / "ca" / "ca.crt")
    assert settings.device_keys == folder / "device-keys.json" and len(settings.keys()) == 6
