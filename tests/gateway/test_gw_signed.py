"""Signed updates at a gateway over a real mosquitto: forged, unsigned, unknown and replayed updates are refused
with their reason codes and never counted, valid traffic is unaffected, and the seq store survives a restart."""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import replace
from pathlib import Path

import pytest
from gateway_peers import P, devices, make_task, make_up, started_node

from flcore.messages import Ack, Up
from flcore.topics import GatewayTopics
from gateway.collector import Collector
from gateway.device_keys import DeviceKeys, DeviceKeysError
from gateway.journal import Journal
from gateway.verdicts import SubRound
from iotfl.broker import Broker

T0 = int(time.time() * 1000)  # a signing device's first seq: unix milliseconds


def write_keys(path: Path, keys: dict[str, bytes]) -> None:
    path.write_text(json.dumps({dev: key.hex() for dev, key in keys.items()}))
    path.chmod(0o600)


def flip(payload: bytes, at: int) -> bytes:
    forged = bytearray(payload)
    forged[at] ^= 0x01
    return bytes(forged)


def answer(dev, payload: bytes) -> tuple[str, str]:
    dev.send(payload)
    ack: Ack = dev.ack()
    return ack.status, ack.reason


@pytest.fixture
def keys() -> dict[str, bytes]:
    return {dev: secrets.token_bytes(32) for dev in ("d1", "d2", "d3", "d5")}


def test_forged_unsigned_unknown_and_replayed_updates_are_refused(
    mosquitto: Broker, tmp_path: Path, keys: dict[str, bytes]
) -> None:
    key_file = tmp_path / "keys.json"
    write_keys(key_file, keys)
    journal = Journal(tmp_path / "state", "gw0")
    ring = DeviceKeys(key_file)
    captured: dict[str, bytes] = {}
    with (
        started_node(mosquitto.url, journal=journal, keys=ring) as node,
        devices(mosquitto.url, "d1", "d2", "d3", "d5", "d9") as (d1, d2, d3, d5, d9),
    ):
        # round 1
        journal.begin(1, 0)
        node.open_sub_round(make_task(round=1, base=0))
        captured["d1"] = make_up("d1", round=1, n=10, seq=T0 + 1).encode(key=keys["d1"])
        assert answer(d1, captured["d1"]) == ("accepted", "")
        assert answer(d2, make_up("d2", round=1, n=20, seq=T0 + 1).encode(key=keys["d2"])) == ("accepted", "")
        d3_valid = make_up("d3", round=1, n=30, seq=T0 + 5).encode(key=keys["d3"])
        refused = [
            (d3, make_up("d3", round=1, seq=T0 + 2).encode(key=keys["d1"]), "signature"),  # another device's key
            (d3, flip(d3_valid, len(d3_valid) - 38 - 3), "signature"),  # one byte of q (the last field before sig)
            (d1, replace(Up.decode(captured["d1"]), round=2).encode(), "signature"),  # round changed, old sig kept
            (d3, make_up("d3", round=1, seq=T0 + 3).encode(), "unsigned"),
            (d9, make_up("d9", round=1, seq=T0 + 1).encode(key=secrets.token_bytes(32)), "unknown_device"),
        ]
        for dev, payload, reason in refused:
            assert answer(dev, payload) == ("rejected", reason)
        assert answer(d3, d3_valid) == ("accepted", "")  # the forgeries did not use up d3's slot
        # replays in the same round: the captured message, and a re-signed one with an old seq → duplicate
        assert answer(d1, captured["d1"]) == ("duplicate", "duplicate")
        assert answer(d1, make_up("d1", round=1, seq=T0).encode(key=keys["d1"])) == ("duplicate", "duplicate")
        total = node.close_sub_round()
        assert (total.k, total.n) == (3, 60)
        assert node.totals is not None and sorted(node.totals.devices) == ["d1", "d2", "d3"]
        counters = node.counters
        assert (counters["accepted"], counters["signature"], counters["unsigned"]) == (3, 3, 1)
        assert (counters["unknown_device"], counters["duplicate"]) == (1, 2)

        # round 2: cross-round replays are never counted
        d5_withheld = make_up("d5", round=1, n=50, seq=T0).encode(key=keys["d5"])  # signed in round 1, held back
        journal.begin(2, 1)
        node.open_sub_round(make_task(round=2, base=1))
        assert answer(d1, captured["d1"]) == ("duplicate", "duplicate")  # round 1's accepted update again
        assert answer(d5, d5_withheld) == ("late", "late")
        assert answer(d1, make_up("d1", round=2, base=1, seq=T0 + 1).encode(key=keys["d1"])) == ("rejected", "replay")
        captured["d1r2"] = make_up("d1", round=2, base=1, n=10, seq=T0 + 7).encode(key=keys["d1"])
        assert answer(d1, captured["d1r2"]) == ("accepted", "")
        assert answer(d2, make_up("d2", round=2, base=1, n=20, seq=T0 + 8).encode(key=keys["d2"])) == ("accepted", "")
        total = node.close_sub_round()
        assert (total.k, total.n) == (2, 30)
        assert node.counters["replay"] == 1 and node.counters["late"] == 1

        # provisioning adds a device: the gateway takes its key without a restart
        keys["d4"] = secrets.token_bytes(32)
        write_keys(key_file, keys)
        os.utime(key_file, ns=(time.time_ns(), time.time_ns() + 1))  # a changed mtime even on a coarse clock
    journal.close()

    # a restarted gateway: the seq store comes back from the journal's database
    journal = Journal(tmp_path / "state", "gw0")
    assert journal.seqs() == {"d1": T0 + 7, "d2": T0 + 8, "d3": T0 + 5}  # d5's late update is not in it
    with (
        started_node(mosquitto.url, journal=journal, keys=DeviceKeys(key_file)) as node,
        devices(mosquitto.url, "d1", "d4") as (d1, d4),
    ):
        journal.begin(3, 2)
        node.open_sub_round(make_task(round=3, base=2))
        assert answer(d1, captured["d1r2"]) == ("rejected", "replay")  # no dedup memory of round 2 here
        assert answer(d1, make_up("d1", round=3, base=2, seq=T0 + 7).encode(key=keys["d1"])) == ("rejected", "replay")
        assert answer(d4, make_up("d4", round=3, base=2, n=5, seq=T0).encode(key=keys["d4"])) == ("accepted", "")
        assert answer(d1, make_up("d1", round=3, base=2, n=10, seq=T0 + 9).encode(key=keys["d1"])) == ("accepted", "")
        total = node.close_sub_round()
        assert (total.k, total.n) == (2, 15)
    journal.close()


def test_a_journaled_round_replays_without_tripping_the_seq_check(
    mosquitto: Broker, tmp_path: Path, keys: dict[str, bytes]
) -> None:
    key_file = tmp_path / "keys.json"
    write_keys(key_file, keys)
    journal = Journal(tmp_path / "state", "gw0")
    with (
        started_node(mosquitto.url, journal=journal, keys=DeviceKeys(key_file)) as node,
        devices(mosquitto.url, "d1") as (d1,),
    ):
        journal.begin(1, 0)
        node.open_sub_round(make_task(round=1))
        assert answer(d1, make_up("d1", n=10, seq=T0).encode(key=keys["d1"])) == ("accepted", "")
    journal.close()
    journal = Journal(tmp_path / "state", "gw0")
    replay = journal.begin(1, 0)
    assert replay is not None and len(replay.ups[0]) == 1
    with started_node(mosquitto.url, journal=journal, keys=DeviceKeys(key_file)) as node:
        node.open_sub_round(make_task(round=1), replay.ups[0])
        total = node.close_sub_round()
        assert (total.k, total.n) == (1, 10)
        assert node.counters == {"accepted": 1}
    journal.close()


def test_bad_key_files_are_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    cases = {
        "": "is not JSON",
        "[1]": "must hold a JSON object",
        '{"d1": "00"}': "the key of d1: a device key is 64 hex digits",
        json.dumps({"d1": "zz" * 32}): "non-hex",
        json.dumps({"bad id": "00" * 32}): "'bad id' is not a device id",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(DeviceKeysError, match=message) as info:
            DeviceKeys(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(DeviceKeysError, match="cannot read"):
        DeviceKeys(tmp_path / "missing.json")


def test_a_key_file_that_turns_bad_keeps_the_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    write_keys(path, {"d1": b"\x01" * 32})
    ring = DeviceKeys(path)
    path.write_text('{"d1": ')  # a half-written copy
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1))
    assert ring("d1") == b"\x01" * 32
    write_keys(path, {"d1": b"\x02" * 32, "d2": b"\x03" * 32})
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2))
    assert (ring("d1"), ring("d2"), ring("d3")) == (b"\x02" * 32, b"\x03" * 32, None)


def test_without_keys_nothing_changes() -> None:
    collector = Collector(GatewayTopics("default", "gw0"))
    collector.open(SubRound(round=1, sub=0, base=0, params=P))
    topic = "iotfl/default/gw/gw0/up/{}"
    signed = make_up("d1", seq=T0).encode(key=secrets.token_bytes(32))  # a signed update is just accepted
    unsigned = make_up("d2", seq=T0).encode()
    old_seq = make_up("d3", seq=0).encode()
    sent = (("d1", signed), ("d2", unsigned), ("d3", old_seq))
    verdicts = [collector.ingest(topic.format(dev), payload) for dev, payload in sent]
    assert [v.ack.status for v in verdicts if v is not None] == ["accepted"] * 3
