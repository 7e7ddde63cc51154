"""Real peers for gateway tests: a small model, update builders, and a device that talks paho to the broker."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from flcore.endpoints import parse_broker_url
from flcore.messages import Ack, Status, Task, Up
from flcore.model import ModelSpec
from flcore.quantize import quantize
from flcore.topics import GatewayTopics, status_topic
from gateway.node import GatewayNode
from gateway.service import run
from gateway.settings import GatewaySettings

SPEC = ModelSpec((4, 3, 2))  # P = 23
P = SPEC.param_count
CHUNK = 8
WAIT = 10.0
T = TypeVar("T")


def make_task(round: int = 1, base: int = 0, sub: int = 0, deadline_in: float = 30.0, seed: int = 0) -> Task:
    return Task(round, base, SPEC.layers, SPEC.init(seed), 0.1, 1, 8, CHUNK, time.time() + deadline_in, 0.2, sub=sub)


def make_up(
    dev: str,
    round: int = 1,
    base: int = 0,
    n: int = 10,
    loss: float = 0.5,
    seq: int = 0,
    sub: int = 0,
    delta: np.ndarray | None = None,
    meta: dict | None = None,
) -> Up:
    """An update whose delta defaults to a vector derived from the device id (deterministic)."""
    if delta is None:
        rng = np.random.default_rng(sum(dev.encode()) + 31 * round + 7 * sub)
        delta = rng.normal(0, 0.1, P).astype(np.float32)
    scales, q = quantize(delta, CHUNK)
    return Up(dev, round, base, n, loss, seq, CHUNK, scales, q, sub, meta)


class Device:
    """One device's real MQTT client: publishes on its ``up`` topic and queues the acks it gets."""

    def __init__(self, broker_url: str, dev: str, gw: str = "gw0", fleet: str = "default") -> None:
        self.dev = dev
        self.topics = GatewayTopics(fleet, gw)
        self.fleet = fleet
        self.acks: queue.Queue[Ack] = queue.Queue()
        self.tasks: queue.Queue[Task] = queue.Queue()
        self._subscribed = threading.Event()
        address = parse_broker_url(broker_url)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{dev}-{id(self)}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect(address.host, address.port)
        self.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.loop_start()
        self.client.subscribe([(self.topics.prefix + f"/ack/{dev}", 1), (self.topics.task, 1)])
        if not self._subscribed.wait(WAIT):
            raise TimeoutError(f"device {dev} could not subscribe")

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topics.task:
            self.tasks.put(Task.decode(msg.payload))
        else:
            self.acks.put(Ack.decode(msg.payload))

    def send(self, payload: bytes | Up, topic: str | None = None) -> None:
        data = payload.encode() if isinstance(payload, Up) else payload
        info = self.client.publish(topic or f"{self.topics.prefix}/up/{self.dev}", data, qos=1)
        info.wait_for_publish(WAIT)

    def status(self, status: Status) -> None:
        self.client.publish(status_topic(self.fleet, self.dev), status.encode(), qos=1, retain=True).wait_for_publish(
            WAIT
        )

    def ack(self, timeout: float = WAIT) -> Ack:
        return self.acks.get(timeout=timeout)

    def no_ack(self, within: float = 0.5) -> bool:
        try:
            self.acks.get(timeout=within)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """``predicate()``'s first truthy value, polled every 0.1 s; TimeoutError after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what} not met within {timeout} s")


@contextmanager
def started_node(broker_url: str, gw: str = "gw0", **kwargs: object) -> Iterator[GatewayNode]:
    node = GatewayNode(gw, parse_broker_url(broker_url), **kwargs)  # type: ignore[arg-type]
    if not node.start(WAIT):
        raise TimeoutError("gateway could not connect")
    try:
        yield node
    finally:
        node.stop()


@contextmanager
def devices(broker_url: str, *ids: str, gw: str = "gw0") -> Iterator[list[Device]]:
    made = [Device(broker_url, dev, gw) for dev in ids]
    try:
        yield made
    finally:
        for device in made:
            device.close()


@contextmanager
def running_gateway(settings: GatewaySettings) -> Iterator[None]:
    """The gateway service in a thread for the block; it must stop within ``WAIT`` seconds afterwards."""
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(settings, stop), name=settings.id, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(WAIT)
        assert not thread.is_alive(), f"gateway {settings.id} did not stop"
