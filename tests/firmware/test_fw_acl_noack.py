"""A board whose config.json logs in with another device's broker credentials (a stolen login) against the broker
config ``iotfl provision fleet`` generates (TLS with the fleet's CA, password file, ACL): the broker drops its update
(the ACL lets the login write only its own ``up`` topic), so no ack ever comes, and the board notices: it re-sends the
same seq, keeps the update for the next wake, and gives up after three wakes' worth of sends. The real gateway never
sees it, while a correctly provisioned board on the same gateway is accepted."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fw_device import Device, device_config, write_samples
from micropython_runner import MicroPythonRunner
from provisioned_fleet import FLEET, provisioned_fleet

from flcore.datasets import sensors
from flcore.messages import Task
from flcore.model import ModelSpec
from gateway.node import GatewayNode
from gateway.settings import GatewaySettings

LAYERS = (10, 16, 5)
SAMPLES = 16


@pytest.fixture
def provisioned(tmp_path: Path) -> Iterator[Path]:
    """The folder of a provisioned fleet (gw0: d0000, d0002; gw1: d0001), with mosquitto running its iotfl.conf."""
    with provisioned_fleet(tmp_path) as fleet:
        yield fleet.out


def provisioned_board(mpy: MicroPythonRunner, prov: Path, dev: str, folder: Path, login: str | None = None) -> Device:
    """A board flashed with ``dev``'s provisioned config.json and CA; ``login``: another device's broker user and
    password instead of its own (as if copied off that device)."""
    cfg = json.loads((prov / "devices" / dev / "config.json").read_text())
    if login is not None:
        stolen = json.loads((prov / "devices" / login / "config.json").read_text())["broker"]
        cfg["broker"].update(user=stolen["user"], password=stolen["password"])
    board = Device(mpy, folder, heap="128K")
    board.flash()
    shutil.copy(prov / "devices" / dev / cfg["broker"]["ca"], folder / cfg["broker"]["ca"])
    data = sensors(0, samples=100)
    write_samples(folder, data.x_train[:SAMPLES], data.y_train[:SAMPLES])
    ids = {key: cfg[key] for key in ("gw", "fleet", "broker", "hmac", "ota")}
    board.configure(device_config(dev, cfg["broker"]["port"], **ids, ack_timeout_ms=600, max_resends=1))
    return board


def gateway(prov: Path) -> GatewayNode:
    """gw0 as provisioned (its login over TLS, its devices' keys), with round 1 open."""
    env = dict(line.split("=", 1) for line in (prov / "gateways" / "gw0" / "gateway.env").read_text().splitlines()[1:])
    settings = GatewaySettings(
        id="gw0",
        fleet=FLEET,
        broker=env["IOTFL_BROKER"],
        token="unused",
        broker_ca=Path(env["IOTFL_BROKER_CA"]),
        device_keys=Path(env["IOTFL_DEVICE_KEYS"]),
    )
    node = GatewayNode.from_settings(settings)
    assert node.start(10), "the gateway could not log in over TLS"
    node.open_sub_round(Task(1, 0, LAYERS, ModelSpec(LAYERS).init(0), 0.05, 1, 8, 64, time.time() + 60, 0.1))
    return node


def test_a_board_with_a_stolen_login_notices_that_no_ack_comes(
    mpy_unix: MicroPythonRunner, provisioned: Path, tmp_path: Path
) -> None:
    prov = provisioned
    node = gateway(prov)
    try:
        honest = provisioned_board(mpy_unix, prov, "d0000", tmp_path / "d0000")
        wake = "\n".join(map(str, honest.wake(40)))
        assert "ack accepted for seq 1" in wake, wake
        # d0002's config with d0000's login: it reads gw0's task, trains, and publishes on up/d0002
        thief = provisioned_board(mpy_unix, prov, "d0002", tmp_path / "d0002", login="d0000")
        wakes = []
        for _ in range(3):
            boots = thief.wake(40)
            assert boots[-1].sleep_ms is not None, "\n".join(map(str, boots))
            wakes.append(("\n".join(b.stdout for b in boots), thief.state()))
        counters, totals = node.counters, node.totals
    finally:
        node.stop()
    (first, after_first), (second, after_second), (third, after_third) = wakes
    assert "round 1 sub 0 trained on 16 samples" in first and "seq 1" in first, first
    # each publish was taken by the broker (PUBACK) and dropped: the board waited for an ack that never came,
    # re-sent the same stored update (max_resends 1: two sends a wake), kept it across wakes, then gave up
    again = "iotfl: no ack for seq 1 yet: sending it again"
    kept = "iotfl: no ack for seq 1 in this wake: keeping it for the next one"
    assert [out.count(again) for out, _ in wakes] == [1, 2, 2]
    assert kept in first and kept in second and kept not in third
    assert "iotfl: gave up on seq 1 after 6 sends" in third, third
    assert all("iotfl: ack " not in out for out, _ in wakes)
    assert [(st["pending"] or {}).get("sends") for st in (after_first, after_second)] == [2, 4]
    assert after_first["pending"]["seq"] == after_second["pending"]["seq"] == 1
    assert (after_third["seq"], after_third["pending"], after_third["last"]) == (1, None, [1, 0])
    # the gateway saw only the honest board's update
    assert counters == Counter({"accepted": 1}), counters
    assert totals is not None and totals.k == 1 and totals.devices == {"d0000": SAMPLES}
