"""The lean ``up`` reader against a real mosquitto: batches, PUBACK only when handled, persistent session, replies."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from flcore.endpoints import parse_broker_url
from gateway.mqtt_reader import Handled, UpReader
from iotfl.broker import Broker, start_broker

WAIT = 10.0
FILTER = "t/up/+"


@contextmanager
def client(broker: Broker, name: str, subscribe: str | None = None) -> Iterator[tuple[paho.Client, queue.Queue]]:
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=name)
    c.on_message = lambda _c, _u, msg: got.put((msg.topic, bytes(msg.payload)))
    subscribed = threading.Event()
    c.on_subscribe = lambda *_: subscribed.set()
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        if subscribe is not None:
            c.subscribe(subscribe, qos=1)
            assert subscribed.wait(WAIT)
        yield c, got
    finally:
        c.disconnect()
        c.loop_stop()


def publish_all(c: paho.Client, messages: list[tuple[str, bytes]]) -> None:
    infos = [c.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(WAIT)


class Recorder:
    """A batch handler that records what it got and refuses (flags False) while ``refuse`` is set."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, bytes]]] = []
        self.refuse = False
        self.lock = threading.Lock()

    def __call__(self, batch: list[tuple[str, bytes]]) -> Handled:
        with self.lock:
            self.batches.append(batch)
        replies = [(topic.replace("/up/", "/ack/"), b"ok:" + payload) for topic, payload in batch]
        return Handled([not self.refuse] * len(batch), [] if self.refuse else replies)

    @property
    def received(self) -> list[bytes]:
        with self.lock:
            return [payload for batch in self.batches for _, payload in batch]


def wait_until(predicate: Callable[[], object], timeout: float = WAIT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_a_stream_is_handled_in_batches_pubacked_once_and_answered(mosquitto: Broker) -> None:
    handler = Recorder()
    reader = UpReader(parse_broker_url(mosquitto.url), "reader-1", FILTER, handler)
    messages = [(f"t/up/d{i}", b"%05d" % i + bytes(2500)) for i in range(300)]
    try:
        assert reader.start(WAIT)
        with client(mosquitto, "pub") as (pub, _), client(mosquitto, "acks", "t/ack/+") as (_, acks):
            publish_all(pub, messages)
            assert wait_until(lambda: reader.pubacked == len(messages))
            replies = sorted(acks.get(timeout=WAIT) for _ in messages)
        assert sorted(handler.received) == sorted(p for _, p in messages)
        assert len(handler.batches) < len(messages)  # several updates per batch
        assert replies == sorted((t.replace("/up/", "/ack/"), b"ok:" + p) for t, p in messages)
        assert reader.withheld == 0 and reader.errors == 0
    finally:
        reader.stop()


def test_unhandled_updates_are_redelivered_and_updates_sent_while_down_arrive_after(mosquitto: Broker) -> None:
    handler = Recorder()
    address = parse_broker_url(mosquitto.url)
    reader = UpReader(address, "reader-2", FILTER, handler)
    first = [(f"t/up/a{i}", b"a%d" % i) for i in range(20)]
    later = [(f"t/up/b{i}", b"b%d" % i) for i in range(20)]
    with client(mosquitto, "pub") as (pub, _):
        try:
            assert reader.start(WAIT)
            handler.refuse = True  # as if the journal could not commit: no PUBACK
            publish_all(pub, first)
            assert wait_until(lambda: reader.withheld == len(first))
            assert reader.pubacked == 0
        finally:
            reader.stop()
        publish_all(pub, later)  # queued by the broker for the reader's persistent session
        handler.refuse = False
        again = UpReader(address, "reader-2", FILTER, handler)
        try:
            assert again.start(WAIT)
            expected = [p for _, p in first + later]
            assert wait_until(lambda: again.pubacked == len(expected))
            handled = handler.received[len(first) :]  # after the refused first delivery
            assert sorted(handled) == sorted(expected)  # each redelivered once, nothing lost
        finally:
            again.stop()


def test_the_reader_reconnects_after_the_broker_restarts(mosquitto: Broker, tmp_path: Path) -> None:
    handler = Recorder()
    reader = UpReader(parse_broker_url(mosquitto.url), "reader-3", FILTER, handler)
    try:
        assert reader.start(WAIT)
        mosquitto.kill()
        assert wait_until(lambda: not reader.connected.is_set())
        second = start_broker(port=mosquitto.port, prefer="mosquitto", workdir=tmp_path / "broker2")
        try:
            assert reader.subscribed.wait(WAIT + 30), "the reader did not come back"
            assert reader.delays and reader.failures == 0
            with client(second, "pub") as (pub, _):
                publish_all(pub, [("t/up/x", b"after")])
                assert wait_until(lambda: reader.pubacked == 1)
            assert handler.received == [b"after"]
        finally:
            second.stop()
    finally:
        reader.stop()
