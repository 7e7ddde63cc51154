"""One simulated device: its own MQTT connection, training on its gateway's tasks, encoded updates, acks, resends.

An update is encoded as the task names (``enc``, ``topk``), else as the fleet's setting (``flcore.encodings``); with
topk the device keeps its error-feedback residual (what it has not sent yet) and adds it to its next delta.

Threads: a network loop (``NetLoop``: one thread drives the paho clients of many devices, reconnecting each with
jittered backoff, and runs their timers) runs the callbacks, which only decode and record; a fleet shares one loop,
a device made without one gets its own. Training runs on a shared executor (many devices share a few cores) and a
device queues at most one task, the newest, so a burst of tasks never piles up work that a later task has
superseded. Every sent update stays in the ``Outbox`` until its ack, across later tasks and reconnects. One lock
guards the device's state; paho calls are made outside it.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from device_sim.attack import Attack
from device_sim.battery import Battery
from device_sim.connection import Backoff, client_id, cut, make_client
from device_sim.device_faults import DeviceFaults
from device_sim.netloop import Link, NetLoop, TimerHandle
from device_sim.outbox import Outbox, Pending
from device_sim.personal import Personal, personal_seed
from device_sim.policy import decide_task, skip_state
from device_sim.report import DeviceReport
from device_sim.settings import FleetSettings
from device_sim.update import local_delta, make_up, spend_and_seal
from flcore.encodings import encode
from flcore.endpoints import parse_broker_url
from flcore.errors import WireError
from flcore.hetero import width_for
from flcore.messages import Ack, Status, Task
from flcore.topics import GatewayTopics, status_topic

log = logging.getLogger(__name__)

Event = dict[str, Any]

# A slow device (chaos ``slow-devices``) publishes this long after the task's deadline, so the update is late.
SLOW_MARGIN = 1.0
# Kept updates are re-sent at a random moment this many seconds after a reconnect.
RESEND_AFTER_RECONNECT = 1.0
# start() waits this long per connection attempt: a wait between attempts is at most 4 s (2 s, doubled by jitter).
CONNECT_WAIT_PER_ATTEMPT = 5.0


class SimDevice(DeviceFaults):
    """A device ``dev`` of gateway ``gw`` holding the shard ``(x, y)``; ``start()`` connects, ``stop()`` leaves."""

    def __init__(
        self,
        dev: str,
        gw: str,
        x: np.ndarray,
        y: np.ndarray,
        *,
        ram_class: str,
        battery: Battery,
        settings: FleetSettings,
        pool: Executor,
        rssi: int = -60,
        on_event: Callable[[Event], None] | None = None,
        key: bytes | None = None,
        login: tuple[str, str] | None = None,
        net: NetLoop | None = None,
    ):
        """``key``: the device's HMAC key; with one, every update is signed (``flcore.signing``). ``login``: its
        own broker user and password (a provisioned fleet), instead of the broker URL's. ``net``: the network loop
        shared with other devices (default: a loop of its own, ended by ``stop()``)."""
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"device {dev} needs at least one sample and one label per sample")
        self.dev, self.gw, self.x, self.y = dev, gw, x, y
        self.ram_class, self.battery, self.rssi = ram_class, battery, rssi
        self.settings, self._pool, self._on_event = settings, pool, on_event
        self.topics = GatewayTopics(settings.fleet, gw)
        self.status_topic = status_topic(settings.fleet, dev)
        self.address = parse_broker_url(settings.broker)
        if login is not None:
            self.address = dataclasses.replace(self.address, username=login[0], password=login[1])
        self.report = DeviceReport(dev, gw, ram_class, len(y), battery.level)
        self.connected = threading.Event()
        self.done = threading.Event()  # set by a task with done=true
        self.vanished = False  # chaos: gone for good without a word (see vanish())
        self.slow = False  # chaos: every update goes out SLOW_MARGIN after the task's deadline
        self.attack: Attack | None = None  # a poisoning attacker (the fleet flips its labels for label-flip, scale10)
        self._lock = threading.Lock()
        self._stopped = False
        self.key = key
        # A gateway refuses a signed update whose seq is not above the last it accepted, across restarts of either.
        self._seq = 0 if key is None else int(time.time() * 1000)
        # DP noise from OS entropy, never from the run's seed: noise an observer can regenerate protects nothing.
        self._dp_rng = np.random.default_rng()
        self._residual: np.ndarray | None = None  # topk error feedback: the part of past deltas not sent yet
        self._personal: Personal | None = None  # its split and personal head, from the first task asking for them
        self._last_key: tuple[int, int] | None = None
        self._next: Task | None = None
        self._task_bytes: dict[tuple[int, int], int] = {}  # (round, sub) -> the task's size, for energy accounting
        self._scheduled = False
        self._own_net = net is None
        self._net = NetLoop(name=f"iotfl-net-{dev}") if net is None else net
        self._link: Link | None = None
        self._delayed: set[TimerHandle] = set()
        self.outbox = Outbox(
            settings.ack_timeout,
            settings.max_resends,
            call_later=self._net.call_later,
            online=self.connected.is_set,
            resend=self._resend,
            give_up=self._gave_up,
        )
        self._client = make_client(client_id(settings.fleet, dev), self.address, settings.tls_ca)
        self._client.will_set(self.status_topic, self._status("offline").encode(), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._backoff = Backoff(settings.reconnect_min, settings.reconnect_max, random.Random(f"{settings.seed}:{dev}"))

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect (bounded retries, raises ConnectionError); the network loop keeps the connection from then on."""
        s = self.settings
        try:
            wait = CONNECT_WAIT_PER_ATTEMPT * (s.connect_retries + 1)
            self._link = self._net.add(
                self._client, self.address, s.keepalive, s.connect_retries, self._backoff, self.dev, wait
            )
        except Exception:
            self._end_own_net()
            raise

    def stop(self, timeout: float = 2.0) -> None:
        """Publish a retained ``offline`` status (a clean disconnect sends no Last Will), then disconnect."""
        with self._lock:
            already, self._stopped = self._stopped, True
        self._quiet()
        if already:
            if self.vanished:
                cut(self._client, close=True)  # the run is over: let the broker see the dead link now
            self._end_own_net()
            return
        if self.connected.is_set():
            info = self._client.publish(self.status_topic, self._status("offline").encode(), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.debug("%s: offline status not confirmed before disconnect", self.dev)
        self._client.disconnect()
        if self._link is not None:
            self._net.close(self._link, timeout)
        self.connected.clear()
        self._end_own_net()

    # -- paho callbacks (network loop) -----------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("%s: broker refused the connection: %s", self.dev, reason)
            return
        client.publish(self.status_topic, self._status("online").encode(), qos=1, retain=True)
        client.subscribe([(self.topics.task, 1), (self.topics.ack(self.dev), 1)])
        with self._lock:
            self.report.connects += 1
        self.connected.set()
        # Acks published while this clean session was away are gone, and a restarted broker may have lost what
        # it acknowledged: re-send what is kept, spread over the next second (after the SUBACK, so acks arrive).
        self.outbox.rearm(within=RESEND_AFTER_RECONNECT)
        self._emit("connected")

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.connected.clear()
        if not self._stopped:
            log.info("%s: disconnected (%s); reconnecting with backoff", self.dev, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # An exception escaping a callback would make the network loop start this connection over: contain it here.
        try:
            if msg.topic == self.topics.task:
                self._on_task(bytes(msg.payload))
            elif msg.topic == self.topics.ack(self.dev):
                self._on_ack(bytes(msg.payload))
        except Exception:
            log.exception("%s: error handling a message on %s", self.dev, msg.topic)

    def _on_task(self, payload: bytes) -> None:
        if not payload:  # a cleared retained task
            return
        try:
            task = Task.decode(payload)
        except WireError as exc:
            self._bad("task", exc)
            return
        with self._lock:
            if self._stopped or self.done.is_set():
                return
            if task.done:
                self.done.set()
            else:
                key = (task.round, task.sub)
                if self._last_key is not None and key <= self._last_key:
                    return  # a redelivery (retained, on reconnect) of a task already handled
                self._last_key = key
                # Updates of older tasks stay in the outbox: the gateway answers them late or duplicate.
                self._next = task
                self._task_bytes = {key: len(payload)}  # only the newest task is ever trained
                schedule, self._scheduled = not self._scheduled, True
        if task.done:
            self._emit("done")
        elif schedule:
            try:
                self._pool.submit(self._drain)
            except RuntimeError:  # the executor shut down: the fleet is stopping
                with self._lock:
                    self._scheduled = False

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = Ack.decode(payload)
        except WireError as exc:
            self._bad("ack", exc)
            return
        if ack.seq is None or self.outbox.settle(ack.seq) is None:
            return  # an ack for an update already settled (a re-send's second answer) or never sent
        with self._lock:
            self.report.acks[ack.status] = self.report.acks.get(ack.status, 0) + 1
            self.report.settle(ack.seq, ack.status)
        if ack.status == "rejected":
            log.warning("%s: update seq %d of round %s rejected: %s", self.dev, ack.seq, ack.round, ack.reason)
        self._emit("ack", round=ack.round, seq=ack.seq, status=ack.status, reason=ack.reason)

    # -- work (executor threads) ------------------------------------------------------------------------------

    def _drain(self) -> None:
        while True:
            with self._lock:
                task, self._next = self._next, None
                if task is None or self._stopped or self.done.is_set():
                    self._scheduled = False
                    return
            try:
                self._process(task)
            except Exception:
                log.exception("%s: failed on task round %d sub %d", self.dev, task.round, task.sub)

    def _process(self, task: Task) -> None:
        s = self.settings
        with self._lock:
            self.battery.recharge(task.round)
            rx_bytes = self._task_bytes.get((task.round, task.sub), 0)
            reason = decide_task(
                task,
                ram_class=self.ram_class,
                battery=self.battery,
                duty=s.duty,
                dev=self.dev,
                seed=s.seed,
                samples=len(self.y),
                rx_bytes=rx_bytes,
            )
            if reason is not None:
                self.battery.spend_skip()
                self.report.record_skip(reason, task.round, self.battery)
        if reason is not None:
            status = self._status(skip_state(reason), round=task.round, sub=task.sub, skip=reason)
            self._client.publish(self.status_topic, status.encode(), qos=1, retain=True)
            self._emit("skip", round=task.round, sub=task.sub, reason=reason, battery=self.battery.level)
            return

        x, y, accuracy = self.x, self.y, None
        if task.personal:
            # Only this executor thread touches the personal state: a device handles one task at a time.
            self._personal = self._personal or Personal.of(s.seed, self.dev, len(self.y))
            x, y = x[self._personal.train], y[self._personal.train]
        width = width_for(task.widths, self.ram_class)
        delta, loss, train_ms = local_delta(self.dev, task, x, y, s, self._dp_rng, self.attack, width)
        if self._personal is not None and task.personal:
            accuracy = self._personal.step(task, self.x, self.y, personal_seed(s.seed, self.dev, task))
        with self._lock:
            if self._stopped or self.done.is_set() or self._last_key != (task.round, task.sub):
                return  # superseded while training: the gateway has moved on
            enc, fraction = task.enc or s.enc, task.topk or s.topk
            body, self._residual = encode(delta, enc, task.chunk, fraction, self._residual)
            self._seq += 1
            n, seq, ram = len(y), self._seq, self.ram_class
            traits: dict[str, Any] = {"ram": ram, "fw": s.fw, "accuracy": accuracy, "width": width}
            make = partial(make_up, self.dev, task, n, loss, seq, body, train_ms=train_ms, **traits)
            sealed = spend_and_seal(self.battery, task, n, rx_bytes, make, self.key)
            if sealed is None:
                self.report.record_round(task.round, self.battery, trained=False)
                log.info("%s: battery ran out in round %d before its update went out; dead", self.dev, task.round)
                return
            up, payload = sealed
            pending = Pending(up.seq, task.round, task.sub, payload)
            self.report.trainings += 1
            self.report.record_round(task.round, self.battery, trained=True)
            delay = task.deadline + SLOW_MARGIN - time.time() if self.slow else 0.0
            if delay > 0:
                self._delayed.add(self._net.call_later(delay, self._send, pending))
        if delay <= 0:
            self._send(pending)
        self._emit(
            "up",
            round=task.round,
            sub=task.sub,
            seq=up.seq,
            loss=loss,
            train_ms=train_ms,
            bytes=len(pending.payload),
            battery=self.battery.level,
            delay=round(max(delay, 0.0), 3),
        )

    def _send(self, pending: Pending) -> None:
        """First send of an update; it stays in the outbox until its ack."""
        with self._lock:
            self._delayed = {t for t in self._delayed if not t.due()}
            if self._stopped:
                return
            self.report.count_send(pending.payload)
            self.report.updates.append([pending.round, pending.sub, pending.seq, None])
        self.outbox.add(pending)
        self._client.publish(self.topics.up(self.dev), pending.payload, qos=1)

    def _resend(self, pending: Pending) -> None:
        """The outbox's ack timer ran out while online: the same bytes (same ``seq``) again."""
        with self._lock:
            if self._stopped:
                return
            self.report.resends += 1
            self.battery.spend_message(len(pending.payload))
            self.report.count_send(pending.payload)
        self._client.publish(self.topics.up(self.dev), pending.payload, qos=1)
        self._emit("resend", round=pending.round, seq=pending.seq)

    def _gave_up(self, pending: Pending) -> None:
        with self._lock:
            self.report.unacked += 1
        log.warning("%s: no ack for seq %d after %d sends; giving up", self.dev, pending.seq, pending.sends)
        self._emit("gave_up", round=pending.round, seq=pending.seq)

    # -- helpers ----------------------------------------------------------------------------------------------

    def _status(self, state: str, **extra: Any) -> Status:
        level, ram, fw = round(self.battery.level, 4), self.ram_class, self.settings.fw
        return Status(self.dev, state, battery=level, rssi=self.rssi, ram_class=ram, fw=fw, gw=self.gw, **extra)

    def _bad(self, kind: str, exc: WireError) -> None:
        with self._lock:
            self.report.bad_messages += 1
        log.warning("%s: ignoring a bad %s message: %s", self.dev, kind, exc)

    def _emit(self, event: str, **fields: Any) -> None:
        """Tell the progress callback: ``{"event": event, "dev": ..., **fields}``."""
        if self._on_event is None:
            return
        try:
            self._on_event({"event": event, "dev": self.dev, **fields})
        except Exception:
            log.exception("progress callback failed on %s", event)


__all__ = ["SimDevice"]
