"""The gateway's MQTT link reconnects with jittered backoff (not paho's lockstep 1, 2, 4 s) and comes back after a
broker restart with its subscriptions and manual PUBACKs intact."""

from __future__ import annotations

import queue
import random
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from flcore.endpoints import parse_broker_url
from gateway.mqtt import RECONNECT_FIRST, RECONNECT_MAX_DELAY, MqttLink
from iotfl.broker import Broker, start_broker

WAIT = 10.0


def link_to(url: str, name: str, seed: int, got: queue.Queue[tuple[str, str, bytes]]) -> MqttLink:
    def handler(topic: str, payload: bytes) -> bool:
        got.put((name, topic, payload))
        return True

    return MqttLink(parse_broker_url(url), f"iotfl-gw-{name}", {"t/up/+": handler}, rng=random.Random(seed))


def publish(url: str, topic: str, payload: bytes) -> None:
    address = parse_broker_url(url)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(WAIT)
    finally:
        client.disconnect()
        client.loop_stop()


def test_gateways_reconnect_after_a_broker_restart_with_jittered_delays(mosquitto: Broker, tmp_path: Path) -> None:
    got: queue.Queue[tuple[str, str, bytes]] = queue.Queue()
    links = [link_to(mosquitto.url, f"gw{i}", seed=i, got=got) for i in range(2)]
    restarted: Broker | None = None
    try:
        assert all(link.start(WAIT) for link in links)
        mosquitto.kill()
        down_at = time.monotonic()
        # Stay down long enough for a failed attempt or two, so each link draws several waits.
        while time.monotonic() - down_at < 2.5:
            time.sleep(0.1)
        restarted = start_broker(port=mosquitto.port, prefer="mosquitto", workdir=tmp_path / "again")
        for link in links:
            assert link.subscribed.wait(RECONNECT_FIRST * 2 + 4 * 2 + WAIT), "the link did not come back"
        back_in = time.monotonic() - down_at
        assert back_in < 20
        for link in links:
            assert link.failures == 0 and link.connected.is_set()
            assert len(link.delays) >= 2, link.delays
            for n, delay in enumerate(link.delays, start=1):
                assert 0 <= delay <= min(RECONNECT_MAX_DELAY, RECONNECT_FIRST * 2 ** (n - 1))
        # Jittered: not paho's fixed doubling, and two gateways that lost the broker together do not retry together.
        first, second = (link.delays for link in links)
        assert all(d not in (1.0, 2.0, 4.0) for d in first + second)
        assert min(abs(a - b) for a, b in zip(first, second, strict=False)) > 1e-3
        # Subscriptions are back and messages still reach the handlers (and get their PUBACK).
        publish(restarted.url, "t/up/d1", b"after")
        seen = {got.get(timeout=WAIT)[0] for _ in links}
        assert seen == {"gw0", "gw1"}
        assert all(link.withheld == 0 and link.errors == 0 for link in links)
    finally:
        for link in links:
            link.stop()
        if restarted is not None:
            restarted.stop()


def test_stop_ends_the_reconnect_wait_promptly(tmp_path: Path) -> None:
    broker = start_broker(prefer="mosquitto", workdir=tmp_path / "b")
    link = link_to(broker.url, "gw0", seed=7, got=queue.Queue())
    try:
        assert link.start(WAIT)
        broker.kill()
        deadline = time.monotonic() + WAIT
        while not link.delays and time.monotonic() < deadline:
            time.sleep(0.05)
        assert link.delays
    finally:
        started = time.monotonic()
        link.stop()
        assert time.monotonic() - started < 3
        broker.stop()
