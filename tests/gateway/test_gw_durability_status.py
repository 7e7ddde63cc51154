"""What the gateway exposes about faults: the broker's ``$SYS`` dropped-messages counter (read from a real mosquitto
that overflows a queue), the status file, and the documented test hook that holds it at a named point."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from gateway_peers import WAIT
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from flcore.endpoints import parse_broker_url
from gateway import health
from gateway.broker_stats import BrokerStats
from gateway.health import HealthFile, read_status
from gateway.node import GatewayNode
from gateway.pause import Pause, parse_pause
from gateway.settings import GatewaySettings
from iotfl.broker import Broker, free_port, mosquitto_config, mosquitto_path, wait_for_port

QUEUE = 5


@pytest.fixture
def small_queue_broker(tmp_path: Path) -> Iterator[Broker]:
    """mosquitto with the test config but room for only QUEUE queued messages per client."""
    exe = mosquitto_path()
    if exe is None:
        pytest.fail("mosquitto is not installed: run `apt-get install -y mosquitto`")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    text = mosquitto_config(port)
    assert "max_queued_messages 100000" in text and "sys_interval 1" in text
    conf.write_text(text.replace("max_queued_messages 100000", f"max_queued_messages {QUEUE}"))
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, WAIT, proc)
    broker = Broker("mosquitto", port, proc, tmp_path)
    yield broker
    broker.stop()


def test_gateway_reads_the_brokers_dropped_counter(small_queue_broker: Broker) -> None:
    node = GatewayNode("gw0", parse_broker_url(small_queue_broker.url))
    assert node.start(WAIT)
    try:
        end = time.monotonic() + WAIT
        while node.broker_stats.latest is None and time.monotonic() < end:
            time.sleep(0.05)
        assert node.broker_stats.latest == 0  # retained $SYS value, published every sys_interval
        # An offline persistent session whose queue overflows: mosquitto drops the excess silently.
        sleeper = paho.Client(CallbackAPIVersion.VERSION2, client_id="sleeper", clean_session=False)
        sleeper.connect("127.0.0.1", small_queue_broker.port)
        sleeper.loop_start()
        sleeper.subscribe("burst", 1)
        time.sleep(0.3)
        sleeper.disconnect()
        sleeper.loop_stop()
        sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="sender")
        sender.connect("127.0.0.1", small_queue_broker.port)
        sender.loop_start()
        for _ in range(30):
            sender.publish("burst", b"x", qos=1).wait_for_publish(WAIT)
        sender.disconnect()
        sender.loop_stop()
        end = time.monotonic() + WAIT
        while node.broker_stats.total < 30 - QUEUE and time.monotonic() < end:
            time.sleep(0.05)
        assert (node.broker_stats.latest, node.broker_stats.total) == (30 - QUEUE, 30 - QUEUE)
        assert node.broker_stats.take() == 30 - QUEUE and node.broker_stats.take() == 0
    finally:
        node.stop()


def test_dropped_counter_survives_broker_restarts() -> None:
    stats = BrokerStats()
    topic = "$SYS/broker/publish/messages/dropped"
    for value in (b"7", b"9", b"2", b"5", b"junk"):  # 7 was before us; then +2; the broker restarted: +2, +3
        stats.on_dropped(topic, value)
    assert (stats.latest, stats.total, stats.take()) == (5, 7, 7)


def test_status_file_is_rewritten_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = health.status_path(tmp_path, "gw0")
    status = HealthFile(path)
    snapshot = {"gw": "gw0", "round": 1, "outbox_depth": 0, "cloud_reachable": True}
    assert status.update(snapshot) and read_status(path) == {**snapshot, "updated_at": pytest.approx(time.time(), 5)}
    assert not status.update(dict(snapshot))  # nothing changed
    assert not status.update({**snapshot, "cloud_reachable": False})  # a minor change waits MIN_INTERVAL
    assert status.update({**snapshot, "outbox_depth": 1})  # round and outbox depth are written at once
    assert json.loads(path.read_text())["outbox_depth"] == 1
    monkeypatch.setattr(health, "MAX_INTERVAL", 0.0)
    assert status.update({**snapshot, "outbox_depth": 1})  # a heartbeat even without changes


def test_pause_hook_is_off_by_default_and_validated() -> None:
    assert GatewaySettings(id="gw0", token="t").pause_at == "" and parse_pause("") is None
    assert parse_pause("before_ack@3") == ("before_ack", 3) and parse_pause("before_post") == ("before_post", 1)
    for bad in ("before_lunch", "before_ack@0", "before_ack@x"):
        with pytest.raises(ValidationError, match="pause_at"):
            GatewaySettings(id="gw0", token="t", pause_at=bad)
    pause = Pause("before_ack@2", hold=0.2)
    start = time.monotonic()
    pause.reached("before_journal")
    pause.reached("before_ack")
    assert time.monotonic() - start < 0.1  # another point, and the first arrival, pass straight through
    pause.reached("before_ack")
    assert time.monotonic() - start >= 0.2  # the second arrival holds (bounded)
