"""Two gateway workers on one gateway id over an MQTT 5 shared subscription, deduplicating in Redis: 1,000 updates
from a raw publisher (re-sending each update until it is acked, as devices do), each counted exactly once by the
cloud; also when one worker is killed mid-stream and its unacked updates reach the survivor."""

from __future__ import annotations

import json
import secrets
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from scaleout_harness import REDIS_URL, stack_logs, start_cloud, wait_round_closed

from flcore.messages import Ack, Status, Task, Up
from flcore.quantize import dequantize, quantize
from flcore.topics import GatewayTopics, status_topic
from iotfl.stack import Stack

pytestmark = pytest.mark.integration

UPDATES = 1000
GW = "gw0"
WORKERS = ("w0", "w1")
RESEND_AFTER = 2.0
CHUNK = 32


class Publisher:
    """1,000 devices in one MQTT client: retained statuses, one update each for the task's round, re-sent every
    ``RESEND_AFTER`` seconds until an ``accepted`` or ``duplicate`` ack comes back."""

    def __init__(self, port: int, fleet: str) -> None:
        self.topics = GatewayTopics(fleet, GW)
        self.fleet = fleet
        self.devs = [f"d{i:04d}" for i in range(UPDATES)]
        self.task: Task | None = None
        self.acks: dict[str, str] = {}
        self.resends = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{fleet}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(self.topics.task, 1), (self.topics.ack_wildcard, 1)])
        self.client.loop_start()
        for dev in self.devs:
            status = Status(dev, "online", battery=0.9, gw=GW)
            self.client.publish(status_topic(fleet, dev), status.encode(), qos=1, retain=True)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics.task:
            self.task = Task.decode(msg.payload)
            return
        ack = Ack.decode(msg.payload)
        if ack.status in ("accepted", "duplicate"):
            with self.lock:
                self.acks.setdefault(msg.topic.rsplit("/", 1)[1], ack.status)

    def updates(self, task: Task) -> dict[str, Up]:
        rng = np.random.default_rng(7)
        ups = {}
        for i, dev in enumerate(self.devs):
            scales, q = quantize(rng.normal(0, 0.01, task.spec.param_count).astype(np.float32), CHUNK)
            ups[dev] = Up(dev, task.round, task.base, 5 + i % 11, 0.5, 1, CHUNK, scales, q)
        return ups

    def run(self, ups: dict[str, Up], timeout: float) -> None:
        """Publish every update, then re-send the unacked ones until all are acked."""
        sent = {dev: time.monotonic() for dev in ups}
        for dev, up in ups.items():
            self.client.publish(self.topics.up(dev), up.encode(), qos=1)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                missing = [dev for dev in ups if dev not in self.acks]
            if not missing:
                return
            now = time.monotonic()
            for dev in missing:
                if now - sent[dev] >= RESEND_AFTER:
                    self.client.publish(self.topics.up(dev), ups[dev].encode(), qos=1)
                    sent[dev] = now
                    self.resends += 1
            time.sleep(0.05)
        raise AssertionError(f"{len(missing)} update(s) never acked, e.g. {missing[:5]}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _start(tmp_path: Path, port: int, fleet: str, pause_w1: str = "") -> tuple[Stack, str, Publisher]:
    """Cloud, the two workers (w1 with the ``pause_at`` test hook when given) and the publisher, all ready."""
    stack = Stack(tmp_path)
    tokens = {f"{GW}-{w}": secrets.token_urlsafe(12) for w in WORKERS}
    cloud = start_cloud(
        stack, tmp_path, tokens, rounds=1, round_timeout=180, extra=["--min-gateways", "2", "--fleet", fleet]
    )
    publisher = Publisher(port, fleet)
    for w in WORKERS:
        stack.spawn(
            w,
            [
                "gateway",
                "--id",
                GW,
                "--worker-id",
                w,
                "--share-group",
                "workers",
                "--dedup",
                REDIS_URL,
                "--broker",
                f"mqtt://127.0.0.1:{port}",
                "--cloud",
                cloud,
                "--token",
                tokens[f"{GW}-{w}"],
                "--fleet",
                fleet,
                "--round-timeout",
                "180",
                "--state-dir",
                str(tmp_path / w),
            ],
            env={"IOTFL_PAUSE_AT": pause_w1} if pause_w1 and w == "w1" else None,
        )
    # Both workers connected and the task is out: the load is shared from the first update.
    end = time.monotonic() + 60
    while time.monotonic() < end:
        stack.check_alive()
        ready = all("connected to broker" in stack.child(w).log.read_text() for w in WORKERS)
        if ready and publisher.task is not None:
            time.sleep(1.0)  # their SUBACKs follow the CONNACK
            return stack, cloud, publisher
        time.sleep(0.2)
    raise AssertionError(f"the workers did not come up; logs:\n{stack_logs(stack)}")


def _expected_weights(cloud: str, ups: dict[str, Up]) -> np.ndarray:
    """The round-0 model plus the n-weighted mean of the 1,000 deltas: what FedAvg gives when each counts once."""
    w0 = np.asarray(httpx.get(f"{cloud}/api/v1/model/latest?format=json").json()["w"], dtype=np.float64)
    total = sum(up.n * dequantize(up.q, up.scales, up.chunk, np.float64) for up in ups.values())
    return w0 + total / sum(up.n for up in ups.values())


def _check_counted_once(cloud: str, stack: Stack, ups: dict[str, Up], expected: np.ndarray) -> dict:
    closed = wait_round_closed(cloud, 1, stack, timeout=120)
    assert closed["k"] == UPDATES
    assert closed["n"] == sum(up.n for up in ups.values())
    assert set(closed["gateways"]) == {f"{GW}-{w}" for w in WORKERS}
    assert sum(g["k"] for g in closed["gateways"].values()) == UPDATES
    model = httpx.get(f"{cloud}/api/v1/model/latest?format=json").json()
    assert model["version"] == 1
    np.testing.assert_allclose(np.asarray(model["w"]), expected, atol=1e-5)
    return closed


def test_two_workers_share_1000_updates_and_count_each_once(mosquitto, redis_fleet: str, tmp_path: Path) -> None:
    stack, cloud, publisher = _start(tmp_path, mosquitto.port, redis_fleet)
    try:
        assert publisher.task is not None
        ups = publisher.updates(publisher.task)
        expected = _expected_weights(cloud, ups)
        publisher.run(ups, timeout=120)
        closed = _check_counted_once(cloud, stack, ups, expected)
        # Both did a real share of the work (the broker alternates; 1/5 leaves room for uneven batches).
        assert min(g["k"] for g in closed["gateways"].values()) >= UPDATES // 5
    finally:
        publisher.close()
        stack.stop()


def test_a_killed_workers_unacked_updates_reach_the_survivor_once(mosquitto, redis_fleet: str, tmp_path: Path) -> None:
    # w1 holds after committing its 100th update, before acking it; it is killed there, with what it received
    # meanwhile never PUBACKed: devices re-send all of it, and w0 takes it over once w1's lease ran out.
    stack, cloud, publisher = _start(tmp_path, mosquitto.port, redis_fleet, pause_w1="before_ack@100")
    try:
        assert publisher.task is not None
        ups = publisher.updates(publisher.task)
        expected = _expected_weights(cloud, ups)

        def kill_when_paused() -> None:
            end = time.monotonic() + 60
            while time.monotonic() < end and "PAUSED at before_ack" not in stack.child("w1").log.read_text():
                time.sleep(0.05)
            stack.kill("w1")

        killer = threading.Thread(target=kill_when_paused)
        killer.start()
        publisher.run(ups, timeout=150)
        killer.join(70)
        assert "w1" in stack.down and publisher.resends > 0
        # Back without the hook: it forwards the journaled updates it still holds the claims of.
        w1 = stack.child("w1")
        stack.spawn("w1", w1.args, append=True)
        stack.down.discard("w1")
        _check_counted_once(cloud, stack, ups, expected)
        counters = json.loads((tmp_path / "w0" / f"{GW}-w0-status.json").read_text())["counters"]
        assert counters["held"] > 0  # w0 saw w1's claims while w1 lived, then took the updates over
    finally:
        publisher.close()
        stack.stop()
