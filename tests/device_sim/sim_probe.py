"""A real MQTT client that plays the gateway in device tests: publish tasks and acks, collect ups and statuses."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retain: bool


class Probe:
    """Subscribes to ``topics`` and queues every message; every wait is bounded."""

    def __init__(self, port: int, topics: list[str], client_id: str = "test-gateway"):
        self.messages: queue.Queue[Msg] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = lambda _c, _u, m: self.messages.put(Msg(m.topic, bytes(m.payload), bool(m.retain)))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        deadline = time.monotonic() + 5
        while not self.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.client.is_connected(), "probe could not connect to the test broker"
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(5), "probe subscription not acknowledged"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)

    def expect(self, match: Callable[[Msg], bool], timeout: float = 10.0) -> Msg:
        """The first queued message that matches (others are dropped); fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching message within {timeout} s")
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if match(msg):
                return msg

    def quiet(self, match: Callable[[Msg], bool], seconds: float) -> None:
        """Assert that no matching message arrives for ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                return
            assert not match(msg), f"unexpected message on {msg.topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
