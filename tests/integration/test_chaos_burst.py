"""Burst: 2,000 updates from 2,000 devices published within a second to one real gateway (with the real cloud).

The devices announce themselves first with a retained ``online`` status naming the gateway, as real ones do, so
the gateway waits for all 2,000 (it closes a round once every live device answered).

Every update must be acked ``accepted``, the cloud must count k = 2,000, and mosquitto's
``$SYS/broker/publish/messages/dropped`` must not move (it drops silently past ``max_queued_messages``).
"""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from flcore.messages import Ack, Status, Task, Up
from flcore.quantize import quantize
from flcore.topics import GatewayTopics, status_topic
from iotfl.broker import free_port, mosquitto_config, mosquitto_path, wait_for_port
from iotfl.stack import Stack, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

UPDATES = 2000
PUBLISHERS = 20
FLEET = "burst"
GW = GatewayTopics(FLEET, "gw0")
DROPPED = "$SYS/broker/publish/messages/dropped"


@pytest.fixture
def broker_port(tmp_path: Path) -> Iterator[int]:
    """A mosquitto whose $SYS counters refresh every second (the test compares one before and after)."""
    exe = mosquitto_path()
    if exe is None:
        pytest.fail("mosquitto is not installed: run `apt-get install -y mosquitto`")
    port = free_port()
    conf_text = mosquitto_config(port)
    if "sys_interval" not in conf_text:
        conf_text += "sys_interval 1\n"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(conf_text)
    with open(tmp_path / "broker.log", "wb") as log:
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 10, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


class Watcher:
    """One subscriber: the retained task, every ack, and the broker's dropped-messages counter."""

    def __init__(self, port: int):
        self.task: Task | None = None
        self.acks: dict[str, Ack] = {}
        self.dropped: list[int] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"burst-watch-{secrets.token_hex(3)}")
        self.client.on_connect = lambda c, *_: c.subscribe([(GW.task, 1), (f"{GW.prefix}/ack/+", 1), (DROPPED, 0)])
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            if msg.topic == DROPPED:
                self.dropped.append(int(msg.payload))
            elif msg.topic == GW.task and msg.payload:
                self.task = Task.decode(bytes(msg.payload))
            else:
                self.acks.setdefault(msg.topic.rsplit("/", 1)[1], Ack.decode(bytes(msg.payload)))

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if predicate():
                    return
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _updates(task: Task) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    out = {}
    for i in range(UPDATES):
        dev = f"b{i:04d}"
        scales, q = quantize(rng.normal(0, 0.01, task.spec.param_count).astype(np.float32), task.chunk)
        out[dev] = Up(dev, task.round, task.base, 10, 1.0, 1, task.chunk, scales, q).encode()
    return out


def test_two_thousand_updates_in_a_second_are_all_accepted_and_none_dropped(broker_port: int, tmp_path: Path) -> None:
    broker = f"mqtt://127.0.0.1:{broker_port}"
    cloud_port = free_port()
    cloud = f"http://127.0.0.1:{cloud_port}"
    stack = Stack(tmp_path)
    watcher = Watcher(broker_port)
    publishers: list[mqtt.Client] = []
    try:
        stack.spawn(
            "cloud",
            ["cloud", "--port", str(cloud_port), "--db", f"sqlite:///{tmp_path / 'cloud.db'}", "--fleet", FLEET,
             "--dataset", "sensors", "--rounds", "1", "--min-gateways", "1", "--round-timeout", "150"],
            env={"IOTFL_GATEWAY_TOKENS": "gw0=burst-secret"},
        )  # fmt: skip
        wait_healthy(cloud, stack, timeout=60)
        for i in range(PUBLISHERS):
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"burst-pub-{i}-{secrets.token_hex(3)}")
            client.max_inflight_messages_set(UPDATES)
            client.connect("127.0.0.1", broker_port)
            client.loop_start()
            publishers.append(client)
        devs = [f"b{i:04d}" for i in range(UPDATES)]
        announced = [
            publishers[i % PUBLISHERS].publish(
                status_topic(FLEET, dev), Status(dev, "online", gw="gw0").encode(), qos=1, retain=True
            )
            for i, dev in enumerate(devs)
        ]
        for info in announced:
            info.wait_for_publish(30)
        stack.spawn(
            "gw0",
            ["gateway", "--id", "gw0", "--broker", broker, "--cloud", cloud, "--fleet", FLEET,
             "--quorum", str(UPDATES), "--round-timeout", "120", "--state-dir", str(tmp_path / "gw0")],
            env={"IOTFL_TOKEN": "burst-secret"},
        )  # fmt: skip
        watcher.wait("the gateway's task", lambda: watcher.task is not None, 60)
        watcher.wait("the $SYS dropped counter", lambda: bool(watcher.dropped), 10)
        assert watcher.task is not None
        payloads = _updates(watcher.task)
        time.sleep(1.0)  # the gateway has read the 2,000 retained statuses
        with watcher.lock:
            dropped_before = watcher.dropped[-1]

        started = time.monotonic()
        infos = [publishers[i % PUBLISHERS].publish(GW.up(dev), payloads[dev], qos=1) for i, dev in enumerate(devs)]
        queued = time.monotonic() - started
        for info in infos:
            info.wait_for_publish(30)
        pubacked = time.monotonic() - started
        watcher.wait(f"{UPDATES} acks", lambda: len(watcher.acks) >= UPDATES, 120)
        all_acked = time.monotonic() - started
        time.sleep(2.5)  # two $SYS periods
        with watcher.lock:
            dropped_after = watcher.dropped[-1]
            statuses = {dev: ack.status for dev, ack in watcher.acks.items()}

        deadline = time.monotonic() + 60
        while (r1 := httpx.get(f"{cloud}/api/v1/rounds/1").json())["state"] != "closed":
            stack.check_alive()
            assert time.monotonic() < deadline, f"round 1 did not close: {r1}"
            time.sleep(0.5)
    finally:
        for client in publishers:
            client.disconnect()  # before loop_stop: it wakes the network thread, which then ends at once
            client.loop_stop()
        watcher.close()
        stack.stop()
    print(
        f"\n{UPDATES} updates: publish calls {queued:.2f} s, all PUBACKed after {pubacked:.2f} s, all acked by the "
        f"gateway after {all_acked:.2f} s; $SYS dropped {dropped_before} -> {dropped_after}; cloud k={r1['k']}"
    )
    assert queued < 1.0, f"publishing the burst took {queued:.2f} s"
    assert pubacked < 2.0, f"the broker took {pubacked:.2f} s to acknowledge the burst"
    assert sorted(statuses) == devs
    assert set(statuses.values()) == {"accepted"}
    assert dropped_after == dropped_before
    assert r1["k"] == UPDATES and r1["n"] == 10 * UPDATES
