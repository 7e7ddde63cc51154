"""``sim=batched``: a fleet whose devices train together and share one MQTT connection per gateway.

Per-device mode (``device_sim.fleet``) gives every device its own connection, network thread and training call;
at 10,000 devices the Python overhead of that, not the tiny MLP, is the cost. Here every device of every task that
is pending when the fleet's loop looks trains in one ``train_batched`` call (in slices of ``SLICE`` devices, each
published before the next trains, so the gateways ingest while the fleet computes), with the per-device
hyper-parameters, mini-batch shuffles, battery model, skip rules, ``seq`` counters and (optional) signing keys of
per-device mode. Each update is still its own QoS 1 ``up`` on its own device topic, and each device's ack is read
from its own ack topic (the shared connection subscribes to ``ack/+``); updates are kept until acked and re-sent
with the same ``seq`` (``SharedOutbox``).

What batched mode simplifies (refused in ``FleetSettings``: chaos, attacks, DP, provisioned logins): one connection
per gateway means one client id and login for its devices (no per-device ACL) and no per-device Last Will — the
fleet publishes every device's retained ``online`` status on connect and ``offline`` when it stops, so a killed
fleet leaves ``online`` statuses behind and its gateways wait for those devices until the round's deadline. A
device's ``train_ms`` is its share of the batch's time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from device_sim.batch_outbox import Kept, SharedOutbox
from device_sim.batch_trainer import train_batched
from device_sim.battery import Battery
from device_sim.connection import client_id, connect, make_client
from device_sim.personal import Personal, personal_seed
from device_sim.policy import decide_task, shuffle_seed, skip_state
from device_sim.population import DeviceProfile, build_population
from device_sim.report import DeviceReport, FleetReport
from device_sim.settings import FleetSettings
from device_sim.update import make_up, spend_and_seal
from flcore.datasets import Dataset
from flcore.encodings import encode
from flcore.endpoints import parse_broker_url
from flcore.errors import WireError
from flcore.hetero import indices, sub_spec, width_for
from flcore.messages import Ack, Status, Task
from flcore.topics import GatewayTopics, status_topic

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]

# Devices trained per batched call: bounds the fleet's memory (a few [SLICE, P] float32 arrays) and lets the first
# slice's updates travel while the next trains.
SLICE = 2048
# QoS 1 messages a shared connection keeps in flight (paho's default, 20, would make it wait on PUBACKs).
MAX_INFLIGHT = 1000
# Kept updates of a gateway are re-sent at a random moment this many seconds after its connection came back.
RESEND_AFTER_RECONNECT = 1.0
LOOP_STEP = 0.2  # seconds the fleet's loop waits for a task before it checks the outbox and the stop flag
STOP_WAIT = 10.0  # seconds to wait for the offline statuses to reach the broker when the fleet stops


@dataclass(eq=False)
class Member:
    """One simulated device of a batched fleet: its traits, battery, counters and ``seq``."""

    profile: DeviceProfile
    battery: Battery
    report: DeviceReport
    key: bytes | None
    seq: int
    residual: np.ndarray | None = None  # topk's error feedback: what earlier updates did not send
    personal: Personal | None = None  # its split and personal head, from the first task asking for them

    @property
    def dev(self) -> str:
        return self.profile.dev

    def shard(self, task: Task, seed: int) -> np.ndarray:
        """The training-split indices the device trains on for ``task``: its training split under personalization."""
        if not task.personal:
            return self.profile.indices
        self.personal = self.personal or Personal.of(seed, self.dev, len(self.profile.indices))
        return self.profile.indices[self.personal.train]


class GatewayLink:
    """The shared connection of one gateway's devices: reads the task and ``ack/+``, publishes their messages."""

    def __init__(self, fleet: BatchedFleet, gw: str, members: list[Member]) -> None:
        s = fleet.settings
        self.fleet, self.gw, self.members = fleet, gw, members
        self.topics = GatewayTopics(s.fleet, gw)
        self.address = parse_broker_url(s.broker)
        self.connected = threading.Event()
        self.client = make_client(client_id(s.fleet, f"batch-{gw}"), self.address, s.tls_ca)
        self.client.max_inflight_messages_set(MAX_INFLIGHT)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        s = self.fleet.settings
        connect(self.client, self.address, s.keepalive, s.connect_retries)
        self.client.loop_start()

    def stop(self) -> None:
        """Publish every device's retained ``offline`` status, wait (bounded) for the broker to have it, leave."""
        if self.connected.is_set():
            last = None
            for m in self.members:
                last = self.status(m, "offline")
            if last is not None:
                try:
                    last.wait_for_publish(STOP_WAIT)
                except (RuntimeError, ValueError):
                    log.debug("%s: offline statuses not confirmed before disconnect", self.gw)
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()

    def status(self, m: Member, state: str, **extra: Any) -> mqtt.MQTTMessageInfo:
        p, s = m.profile, self.fleet.settings
        level = round(m.battery.level, 4)
        msg = Status(p.dev, state, battery=level, rssi=p.rssi, ram_class=p.ram_class, fw=s.fw, gw=self.gw, **extra)
        return self.client.publish(status_topic(s.fleet, p.dev), msg.encode(), qos=1, retain=True)

    def publish_up(self, dev: str, payload: bytes) -> None:
        self.client.publish(self.topics.up(dev), payload, qos=1)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.warning("%s: broker refused the shared connection: %s", self.gw, reason)
            return
        client.subscribe([(self.topics.task, 1), (self.topics.ack_wildcard, 1)])
        for m in self.members:
            self.status(m, "online")
        self.connected.set()
        # As a device does after a reconnect: acks published while this clean session was away are gone.
        self.fleet.outbox.rearm(self.gw, RESEND_AFTER_RECONNECT, time.monotonic())

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self.connected.clear()
        if not self.fleet.stopping:
            log.info("%s: shared connection lost (%s); paho reconnects", self.gw, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:  # an exception escaping a callback would end paho's network thread
            if msg.topic == self.topics.task:
                self.fleet.on_task(self.gw, bytes(msg.payload))
            else:
                dev = self.topics.device_of_ack(msg.topic)
                if dev is not None:
                    self.fleet.on_ack(dev, bytes(msg.payload))
        except Exception:
            log.exception("%s: error handling a message on %s", self.gw, msg.topic)


class BatchedFleet:
    """The whole batched fleet; ``run()`` serves tasks until every gateway's task says ``done``."""

    def __init__(self, settings: FleetSettings, dataset: Dataset, stop: threading.Event, emit: Emit) -> None:
        self.settings, self.dataset, self.stop, self.emit = settings, dataset, stop, emit
        self.outbox = SharedOutbox(settings.ack_timeout, settings.max_resends)
        self.stopping = False
        self.members: dict[str, Member] = {}
        self.links: dict[str, GatewayLink] = {}
        self._lock = threading.Condition()  # guards the members' state, the pending tasks and ``done``
        self._pending: dict[str, Task] = {}
        self._last: dict[str, tuple[int, int]] = {}
        self._task_bytes: dict[str, int] = {}  # each gateway's newest task's size, for energy accounting
        self.done: set[str] = set()

    def run(self) -> FleetReport:
        s = self.settings
        started = time.monotonic()
        end = None if s.run_timeout is None else started + s.run_timeout
        model, keys = s.battery_model(), s.keys()
        by_gw: dict[str, list[Member]] = {}
        for p in build_population(s, self.dataset.y_train):
            key = keys.get(p.dev)
            report = DeviceReport(p.dev, p.gw, p.ram_class, len(p.indices), p.battery)
            # A signing device starts its seq at the unix time in ms (docs/protocol.md), as in per-device mode.
            m = Member(p, Battery(model, p.battery), report, key, 0 if key is None else int(time.time() * 1000))
            self.members[p.dev] = m
            by_gw.setdefault(p.gw, []).append(m)
        self.links = {gw: GatewayLink(self, gw, ms) for gw, ms in by_gw.items()}
        finished = False
        try:
            for link in self.links.values():
                link.start()
            connect_end = time.monotonic() + s.connect_timeout
            while not all(link.connected.is_set() for link in self.links.values()):
                if self.stop.wait(0.05) or time.monotonic() > connect_end:
                    break
            up = sum(len(link.members) for link in self.links.values() if link.connected.is_set())
            log.info("fleet %s (batched): %d devices on %d shared connections", s.fleet, up, len(self.links))
            self.emit({"event": "fleet_connected", "connected": up, "devices": len(self.members)})
            finished = self._serve(end)
        finally:
            self.stopping = True
            for link in self.links.values():
                link.stop()
        seconds = time.monotonic() - started
        self.emit({"event": "fleet_finished", "seconds": seconds, "stopped": not finished})
        return FleetReport([m.report for m in self.members.values()], seconds, stopped=not finished)

    # -- network threads ------------------------------------------------------------------------------------------

    def on_task(self, gw: str, payload: bytes) -> None:
        if not payload:  # a cleared retained task
            return
        try:
            task = Task.decode(payload)
        except WireError as exc:
            log.warning("%s: ignoring a bad task: %s", gw, exc)
            return
        with self._lock:
            if task.done:
                self.done.add(gw)
            elif self._last.get(gw) is None or (task.round, task.sub) > self._last[gw]:
                self._last[gw] = (task.round, task.sub)
                self._pending[gw] = task  # a newer task supersedes one not yet trained
                self._task_bytes[gw] = len(payload)
            self._lock.notify_all()

    def on_ack(self, dev: str, payload: bytes) -> None:
        try:
            ack = Ack.decode(payload)
        except WireError as exc:
            log.warning("%s: ignoring a bad ack: %s", dev, exc)
            return
        m = self.members.get(dev)
        if m is None or ack.seq is None or self.outbox.settle(dev, ack.seq) is None:
            return
        with self._lock:
            m.report.acks[ack.status] = m.report.acks.get(ack.status, 0) + 1
            m.report.settle(ack.seq, ack.status)
        if ack.status == "rejected":
            log.warning("%s: update seq %d of round %s rejected: %s", dev, ack.seq, ack.round, ack.reason)

    # -- the fleet's loop -------------------------------------------------------------------------------------------

    def _serve(self, end: float | None) -> bool:
        """Train pending tasks and re-send what is due until every gateway is done (True) or stop / timeout."""
        while True:
            with self._lock:
                if len(self.done) == len(self.links):
                    return True
                if not self._pending:
                    self._lock.wait(LOOP_STEP)
                tasks, self._pending = self._pending, {}
            if self.stop.is_set() or (end is not None and time.monotonic() >= end):
                return False
            if tasks:
                self._round(tasks)
            self._sweep()

    def _round(self, tasks: dict[str, Task]) -> None:
        """Decide, train, quantize and publish for every device of the gateways in ``tasks``."""
        s = self.settings
        started = time.monotonic()
        chosen: list[tuple[Member, Task]] = []
        for gw, task in tasks.items():
            link = self.links[gw]
            for m in link.members:
                with self._lock:
                    m.battery.recharge(task.round)
                    reason = decide_task(
                        task,
                        ram_class=m.profile.ram_class,
                        battery=m.battery,
                        duty=s.duty,
                        dev=m.dev,
                        seed=s.seed,
                        samples=len(m.profile.indices),
                        rx_bytes=self._task_bytes.get(gw, 0),
                    )
                    if reason is not None:
                        m.battery.spend_skip()
                        m.report.record_skip(reason, task.round, m.battery)
                if reason is None:
                    chosen.append((m, task))
                else:
                    link.status(m, skip_state(reason), round=task.round, sub=task.sub, skip=reason)
        groups: dict[tuple[Any, ...], list[tuple[Member, Task]]] = {}
        for m, task in chosen:
            width = width_for(task.widths, m.profile.ram_class)
            key = (task.layers, task.lr, task.epochs, task.batch, task.personal, width)
            groups.setdefault(key, []).append((m, task))
        published = 0
        for group in groups.values():
            for at in range(0, len(group), SLICE):
                published += self._train_slice(group[at : at + SLICE])
        seconds = time.monotonic() - started
        rnd = max(task.round for task in tasks.values())
        log.info("round %d: %d updates published in %.2f s (%s)", rnd, published, seconds, ", ".join(sorted(tasks)))
        self.emit({"event": "batch", "round": rnd, "gateways": sorted(tasks), "published": published})

    def _train_slice(self, part: list[tuple[Member, Task]]) -> int:
        """Train ``part`` together and publish each device's update; returns how many went out."""
        s, ds = self.settings, self.dataset
        task0 = part[0][1]
        # A device whose RAM class the task gives a width trains that sub-model (flcore.hetero), on its slice.
        width = width_for(task0.widths, part[0][0].profile.ram_class)
        spec, idx = task0.spec, None
        if width < 1.0:
            spec, idx = sub_spec(task0.spec, width), indices(task0.spec, width)
        w0 = np.stack([task.w if idx is None else task.w[idx] for _, task in part]).astype(np.float32, copy=False)
        seeds = [shuffle_seed(s.seed, m.dev, task.round, task.sub) for m, task in part]
        shards = [m.shard(task, s.seed) for m, task in part]
        started = time.perf_counter()
        new_w, losses = train_batched(
            spec,
            w0,
            ds.x_train,
            ds.y_train,
            shards,
            task0.lr,
            task0.epochs,
            task0.batch,
            seeds,
        )
        train_ms = int(round((time.perf_counter() - started) * 1000 / len(part)))
        deltas = new_w - w0
        log.debug("trained %d devices in %.2f s", len(part), time.perf_counter() - started)
        published = 0
        for i, (m, task) in enumerate(part):
            if not np.isfinite(losses[i]):
                log.error("%s: local training diverged (non-finite weights); no update this round", m.dev)
                continue
            accuracy = None
            if m.personal is not None and task.personal:
                x, y = ds.x_train[m.profile.indices], ds.y_train[m.profile.indices]
                accuracy = m.personal.step(task, x, y, personal_seed(s.seed, m.dev, task))
            with self._lock:
                if self._last.get(m.profile.gw) != (task.round, task.sub) or m.profile.gw in self.done:
                    continue  # superseded while training: the gateway has moved on
                m.seq += 1
                n, seq, loss, ram = len(shards[i]), m.seq, float(losses[i]), m.profile.ram_class
                body, m.residual = encode(deltas[i], task.enc or s.enc, task.chunk, task.topk or s.topk, m.residual)
                traits: dict[str, Any] = {"ram": ram, "fw": s.fw, "accuracy": accuracy, "width": width}
                make = partial(make_up, m.dev, task, n, loss, seq, body, train_ms=train_ms, **traits)
                sealed = spend_and_seal(m.battery, task, n, self._task_bytes.get(m.profile.gw, 0), make, m.key)
                if sealed is None:
                    m.report.record_round(task.round, m.battery, trained=False)
                    log.info("%s: battery ran out in round %d before its update went out; dead", m.dev, task.round)
                    continue
                up, payload = sealed
                m.report.trainings += 1
                m.report.record_round(task.round, m.battery, trained=True)
                m.report.count_send(payload)
                m.report.updates.append([task.round, task.sub, up.seq, None])
            self.outbox.add(Kept(m.dev, m.profile.gw, up.seq, task.round, task.sub, payload, self._due()))
            self.links[m.profile.gw].publish_up(m.dev, payload)
            published += 1
        return published

    def _due(self) -> float:
        return time.monotonic() + self.settings.ack_timeout

    def _sweep(self) -> None:
        """Re-send what waited ``ack_timeout`` for its ack; give up after ``max_resends``."""
        resend, gave_up = self.outbox.due(time.monotonic(), lambda gw: self.links[gw].connected.is_set())
        for kept in resend:
            m = self.members[kept.dev]
            with self._lock:
                m.report.resends += 1
                m.battery.spend_message(len(kept.payload))
                m.report.count_send(kept.payload)
            self.links[kept.gw].publish_up(kept.dev, kept.payload)
        for kept in gave_up:
            with self._lock:
                self.members[kept.dev].report.unacked += 1
            log.warning("%s: no ack for seq %d after %d sends; giving up", kept.dev, kept.seq, kept.sends)


__all__ = ["BatchedFleet", "GatewayLink", "Member"]
