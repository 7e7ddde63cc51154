"""Signed updates from the firmware (config.json ``hmac``): the streamed bytes equal flcore's ``Up.encode(key=...)``,
a gateway with the device's key accepts them, and a board's whole loop runs signed under a 32 KB heap."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import numpy as np
import pytest
from fw_device import Device, device_config, write_samples
from micropython_runner import SCRIPT_HELPERS, MicroPythonRunner

from flcore.datasets import sensors
from flcore.endpoints import parse_broker_url
from flcore.messages import Task, Up
from flcore.model import ModelSpec
from flcore.quantize import quantize
from flcore.topics import GatewayTopics
from gateway.collector import Collector
from gateway.node import GatewayNode
from gateway.verdicts import SubRound
from iotfl.broker import Broker

KEY = bytes(range(100, 132))

ENCODE = (
    SCRIPT_HELPERS
    + r"""
import json
from array import array
from binascii import unhexlify
import upmsg

out = []
for v in json.load(open("in.json")):
    key = unhexlify(v["key"]) if v["key"] else None
    scales, q = array("f", unhexlify(v["scales"])), bytearray(unhexlify(v["q"]))
    args = (v["dev"], v["round"], v["base"], v["n"], v["loss"], v["seq"], v["chunk"], scales, q, v["sub"], v["meta"])
    buf = bytearray()
    upmsg.write_up(buf.extend, *args, key=key)
    sink = upmsg.Sink(upmsg.up_size(*args, key=key))
    upmsg.write_up(sink, *args, key=key)
    out.append({"payload": h(buf), "size": upmsg.up_size(*args, key=key), "sink": h(sink.view())})
print(json.dumps(out))
"""
)

CONFIG = (
    SCRIPT_HELPERS
    + r"""
import json
import config

base = {"dev": "d1", "gw": "gw0", "broker": {"host": "127.0.0.1"}}
out = []
for key in json.load(open("in.json")):
    cfg = dict(base)
    if key != "absent":
        cfg["hmac"] = key
    try:
        out.append(["ok", config.validate(cfg)["hmac"]])
    except config.ConfigError as e:
        out.append(["err", str(e)])
print(json.dumps(out))
"""
)


def cases() -> list[Up]:
    rng = np.random.default_rng(3)
    ups = []
    for i, (size, chunk, sub, meta) in enumerate(
        [(23, 8, 0, None), (200, 64, 2, {"battery": 0.5, "train_ms": 812, "ram_class": "class2", "fw": "0.1.0"})]
    ):
        scales, q = quantize(rng.normal(0, 0.1, size).astype(np.float32), chunk)
        ups.append(Up(f"d{i}", 3 + i, 2, 17, 0.25, 1_700_000_000_000 + i, chunk, scales, q, sub, meta))
    return ups


def test_firmware_signs_the_same_bytes_as_flcore(mpy: MicroPythonRunner, tmp_path: Path) -> None:
    ups = cases()
    vectors = [
        {
            "key": key.hex() if key else "",
            "scales": np.asarray(u.scales, "<f4").tobytes().hex(),
            "q": u.q.tobytes().hex(),
            **{k: getattr(u, k) for k in ("dev", "round", "base", "n", "loss", "seq", "chunk", "sub", "meta")},
        }
        for u in ups
        for key in (KEY, None)
    ]
    (tmp_path / "in.json").write_text(json.dumps(vectors))
    got = mpy.run_json(ENCODE, cwd=tmp_path)
    expected = [u.encode(key=key) for u in ups for key in (KEY, None)]
    for out, want in zip(got, expected, strict=True):
        assert bytes.fromhex(out["payload"]) == want
        assert bytes.fromhex(out["sink"]) == want and out["size"] == len(want)
    # the gateway's rules accept the firmware's signed bytes
    for up, out in zip(ups, got[::2], strict=True):
        collector = Collector(GatewayTopics("default", "gw0"), keys={up.dev: KEY}.get)
        collector.open(SubRound(up.round, up.sub, up.base, up.q.size))
        verdict = collector.ingest(f"iotfl/default/gw/gw0/up/{up.dev}", bytes.fromhex(out["payload"]))
        assert verdict is not None and (verdict.ack.status, verdict.ack.reason) == ("accepted", "")


def test_config_validates_the_hmac_key(mpy: MicroPythonRunner, tmp_path: Path) -> None:
    good = "ab" * 32
    keys = ["absent", good, "AB" * 32, "ab" * 31, "zz" * 32, 7]
    (tmp_path / "in.json").write_text(json.dumps(keys))
    got = mpy.run_json(CONFIG, cwd=tmp_path)
    assert got[:3] == [["ok", None], ["ok", good], ["ok", "AB" * 32]]
    for status, message in got[3:]:
        assert status == "err" and message == "hmac must be 64 hex digits (the device's update-signing key)"


@pytest.fixture
def signed_gateway(mosquitto: Broker):
    key = secrets.token_bytes(32)
    layers = (10, 16, 5)
    node = GatewayNode("gw0", parse_broker_url(mosquitto.url), keys={"fw0": key}.get)
    node.open_sub_round(Task(1, 0, layers, ModelSpec(layers).init(0), 0.05, 1, 8, 256, time.time() + 30, 0.1))
    assert node.start(10)
    yield node, key
    node.stop()


def test_a_board_sends_signed_updates_in_32k(
    mpy_unix: MicroPythonRunner, mosquitto: Broker, signed_gateway, tmp_path: Path
) -> None:
    node, key = signed_gateway
    data = sensors(0, samples=200)
    dev = Device(mpy_unix, tmp_path / "fw0", heap="32K")
    dev.flash()
    write_samples(dev.folder, data.x_train[:32], data.y_train[:32])
    dev.configure(device_config("fw0", mosquitto.port, hmac=key.hex()))
    boots = dev.wake(60)
    log = "\n".join(b.stdout for b in boots)
    assert "ack accepted" in log and not any("wake failed" in b.stdout for b in boots), log
    assert node.counters["accepted"] == 1 and node.totals is not None and node.totals.devices == {"fw0": 32}
    peak = max(b.mem().get("peak", 0) for b in boots)
    print(f"\nsigned tutorial loop under -X heapsize=32K: peak live heap {peak} bytes")
    assert peak <= 32 * 1024
