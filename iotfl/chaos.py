"""``iotfl demo --chaos``: inject process faults into the running demo, then check nothing acknowledged was lost.

``ProcessChaos`` watches the gateways' acks on the broker and fires each fault *mid-round*: at the first
``accepted`` ack of its round (for a fault aimed at a gateway, the first one that gateway sent), so the round is
open with updates in flight. What it does (the grammar is ``flcore.chaos``):

- ``kill-broker``: ``kill -9`` mosquitto (it loses what it did not autosave), restart it DOWN later on the same port
  with the same persistence file;
- ``kill-gateway:GW``: ``kill -9`` the gateway, restart it DOWN later with the same state dir (its journal);
- ``cloud-down``: stop the cloud (SIGTERM), start it again DURATION later on the same port and database;
- ``partition:GW``: SIGSTOP the gateway for DURATION, then SIGCONT (its connections hang, then resume).

Device faults (``drop-devices``, ``slow-devices``) are passed on to the fleet process (``device_sim.chaos``).

``reconcile`` is the ledger the report's ``chaos`` section shows: every update a device saw ``accepted`` (or
``duplicate``: the gateway had it already) must be in the ``devs`` of its gateway's aggregate that the cloud stored
for that round (else *lost*), and the cloud's ``k`` must not exceed what the devices sent (else *double*).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from flcore.chaos import ChaosPlan, Fault
from flcore.endpoints import parse_broker_url
from flcore.errors import WireError
from flcore.messages import Ack
from iotfl.stack import Stack, StackError, wait_healthy

log = logging.getLogger(__name__)

CONFIRMED = ("accepted", "duplicate")  # ack statuses that say "the gateway has this update"


def check_plan(plan: ChaosPlan, rounds: int, gateways: int, owns_broker: bool) -> None:
    """Refuse a plan the demo could not run as written (a ``ValueError`` saying why)."""
    names = {f"gw{i}" for i in range(gateways)}
    for fault in plan.faults:
        if fault.target is not None and fault.target not in names:
            raise ValueError(f"chaos fault {fault}: the demo's gateways are gw0…gw{gateways - 1}")
        if fault.round_in(rounds) > rounds:
            raise ValueError(f"chaos fault {fault} would never fire: the run has {rounds} rounds")
        if fault.kind == "kill-broker" and not owns_broker:
            raise ValueError(f"chaos fault {fault} needs the demo to start the broker (--broker auto|mosquitto)")


class ProcessChaos:
    """Fires the process faults of ``plan`` (triggers resolved to rounds) into ``stack``; ``events`` records them."""

    def __init__(self, plan: ChaosPlan, stack: Stack, broker_url: str, cloud_url: str, fleet: str = "default"):
        if any(not f.by_demo or f.when.round is None for f in plan.faults):
            raise ValueError(f"the demo injects process faults with round triggers only, got {plan}")
        self.stack = stack
        self.cloud_url = cloud_url
        self.events: list[dict[str, Any]] = []
        self._armed = list(plan.faults)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._restore = True
        self._threads: list[threading.Thread] = []
        self._acks = f"iotfl/{fleet}/gw/+/ack/+"
        self._address = parse_broker_url(broker_url)
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"iotfl-chaos-{secrets.token_hex(4)}")
        if self._address.username:
            self._client.username_pw_set(self._address.username, self._address.password)
        self._client.on_connect = lambda c, *_: c.subscribe(self._acks, qos=0)
        self._client.on_message = self._on_message

    def start(self) -> None:
        if not self._armed:
            return
        self._client.connect_async(self._address.host, self._address.port, keepalive=30)
        self._client.loop_start()  # paho reconnects this watcher by itself, also after kill-broker

    def stop(self, timeout: float = 30.0, restore: bool = True) -> None:
        """End every outage now, stop watching, and list the faults that never fired. ``restore`` brings back
        what is down (at the end of a run, so e.g. a gateway still publishes the final ``done`` task); an aborted
        demo skips that."""
        with self._lock:
            self._restore = self._restore and restore
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.1, deadline - time.monotonic()))
        self._client.disconnect()  # first: it wakes paho's thread, so loop_stop returns at once
        self._client.loop_stop()
        with self._lock:
            left, self._armed = self._armed, []
        for fault in left:
            self.events.append({"fault": str(fault), "round": fault.when.round, "injected": False})

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) != 6 or parts[2] != "gw" or parts[4] != "ack":
            return
        try:
            ack = Ack.decode(bytes(msg.payload))
        except WireError:
            return
        if ack.status == "accepted" and ack.round is not None:
            self.observe(parts[3], ack.round)

    def observe(self, gw: str, rnd: int) -> None:
        """Gateway ``gw`` accepted an update of round ``rnd``: fire what is due."""
        with self._lock:
            if self._stop.is_set():
                return
            due = [f for f in self._armed if _due(f, gw, rnd)]
            self._armed = [f for f in self._armed if f not in due]
            for fault in due:
                thread = threading.Thread(target=self._inject, args=(fault, gw, rnd), name="iotfl-chaos", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _outage(self, fault: Fault) -> bool:
        """Wait out the fault's outage (cut short by ``stop``); False when the demo is aborting (no restore)."""
        self._stop.wait(fault.seconds or 0.0)
        with self._lock:
            restore = self._restore
        if not restore:
            self._record(fault, "", "not restored: the demo is stopping")
        return restore

    def _inject(self, fault: Fault, gw: str, rnd: int) -> None:
        trigger = f"first accepted update of round {rnd} (from {gw})"
        try:
            if fault.kind == "kill-broker":
                pid = self.stack.kill_broker()
                self._record(fault, trigger, f"kill -9 broker (pid {pid})")
                if not self._outage(fault):
                    return
                broker = self.stack.restart_broker()
                self._record(fault, "", f"broker restarted on port {broker.port} (pid {broker.proc.pid})")
            elif fault.kind == "kill-gateway":
                assert fault.target is not None
                pid = self.stack.kill(fault.target)
                self._record(fault, trigger, f"kill -9 {fault.target} (pid {pid})")
                if not self._outage(fault):
                    return
                child = self.stack.restart(fault.target)
                self._record(fault, "", f"{fault.target} restarted with its state dir (pid {child.proc.pid})")
            elif fault.kind == "cloud-down":
                pid = self.stack.terminate("cloud")
                self._record(fault, trigger, f"cloud stopped (pid {pid})")
                if not self._outage(fault):
                    return
                child = self.stack.restart("cloud")
                wait_healthy(self.cloud_url, self.stack, timeout=60)
                self._record(fault, "", f"cloud restarted on the same port and database (pid {child.proc.pid})")
            elif fault.kind == "partition":
                assert fault.target is not None
                pid = self.stack.freeze(fault.target)
                self._record(fault, trigger, f"SIGSTOP {fault.target} (pid {pid})")
                self._outage(fault)  # a frozen process is thawed even when aborting: Stack.stop needs it to run
                self.stack.thaw(fault.target)
                self._record(fault, "", f"SIGCONT {fault.target}")
        except (StackError, RuntimeError, OSError) as exc:
            log.error("chaos fault %s failed: %s", fault, exc)
            self._record(fault, trigger, f"failed: {exc}")

    def _record(self, fault: Fault, trigger: str, what: str) -> None:
        log.warning("chaos: %s: %s", fault, what)
        event: dict[str, Any] = {"fault": str(fault), "round": fault.when.round, "injected": True, "what": what}
        event["time"] = time.time()
        if trigger:
            event["trigger"] = trigger
        with self._lock:
            self.events.append(event)


def _due(fault: Fault, gw: str, rnd: int) -> bool:
    assert fault.when.round is not None
    return rnd >= fault.when.round and (fault.target is None or fault.target == gw)


# -- the ledger ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Aggregate:
    """What the cloud stored for one gateway's round: ``k`` accepted updates from the devices ``devs``."""

    round: int
    gw: str
    k: int
    devs: tuple[str, ...]


@dataclass(frozen=True)
class Ledger:
    """Acks the devices saw against what the cloud counted; ``lost`` and ``double`` must both be empty/zero."""

    acks: dict[str, int]
    unanswered: int
    cloud_k: int
    sent: int
    lost: tuple[tuple[int, str, str], ...] = ()  # (round, dev, ack status)
    double: int = 0
    double_detail: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "updates_sent": self.sent,
            "acks_seen_by_devices": dict(sorted(self.acks.items())),
            "accepted_seen_by_devices": self.acks.get("accepted", 0),
            "unanswered": self.unanswered,
            "cloud_k": self.cloud_k,
            "lost": len(self.lost),
            "lost_updates": [list(x) for x in self.lost[:50]],
            "double": self.double,
            "double_detail": list(self.double_detail[:50]),
        }


def reconcile(
    per_device: Iterable[dict[str, Any]], aggregates: Iterable[Aggregate], gateway_rounds: int, stale_rounds: int = 0
) -> Ledger:
    """The ledger from the fleet report's ``per_device`` (``updates``: [round, sub, seq, status]) and the cloud's
    stored aggregates.

    ``stale_rounds`` > 0 (async mode): an update of round r may be counted in any round r … r + stale_rounds, so a
    device may appear up to ``1 + stale_rounds`` times per sub-round in an aggregate, and k is checked over the run.
    """
    acks: Counter[str] = Counter()
    confirmed: dict[tuple[int, str], str] = {}
    published: dict[int, set[tuple[int, str]]] = {}
    unanswered = sent = 0
    for device in per_device:
        for rnd, sub, _seq, status in device.get("updates", []):
            sent += 1
            published.setdefault(rnd, set()).add((sub, device["dev"]))
            if status is None:
                unanswered += 1
                continue
            acks[status] += 1
            if status in CONFIRMED:
                confirmed.setdefault((rnd, device["dev"]), status)
    counted: set[tuple[int, str]] = set()
    k_by_round: Counter[int] = Counter()
    named: Counter[tuple[int, str]] = Counter()
    detail: list[str] = []
    double = 0
    for agg in aggregates:
        k_by_round[agg.round] += agg.k
        for dev in set(agg.devs):
            counted.add((agg.round, dev))
            named[(agg.round, dev)] += 1
        excess = agg.k - gateway_rounds * (1 + stale_rounds) * len(set(agg.devs))
        if excess > 0:
            double += excess
            detail.append(f"round {agg.round} {agg.gw}: k={agg.k} from {len(set(agg.devs))} devices")
    for (rnd, dev), times in sorted(named.items()):
        if times > 1:
            double += times - 1
            detail.append(f"round {rnd}: {dev} in {times} aggregates")
    by_round = (
        {"the run": (sum(k_by_round.values()), sum(map(len, published.values())))}
        if stale_rounds
        else {f"round {rnd}": (k, len(published.get(rnd, ()))) for rnd, k in sorted(k_by_round.items())}
    )
    for where, (k, sent_there) in by_round.items():
        if k > sent_there:
            double += k - sent_there
            detail.append(f"{where}: cloud k={k} but devices sent {sent_there} updates")
    lost = tuple(
        sorted(
            (rnd, dev, status)
            for (rnd, dev), status in confirmed.items()
            if not any((rnd + s, dev) in counted for s in range(stale_rounds + 1))
        )
    )
    return Ledger(dict(acks), unanswered, sum(k_by_round.values()), sent, lost, double, tuple(detail))


def load_aggregates(db_path: Path) -> list[Aggregate]:
    """The aggregates a demo's cloud stored in its SQLite database."""
    from sqlalchemy import create_engine, select

    from cloud.storage import AggregateRow

    engine = create_engine(f"sqlite:///{db_path}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(AggregateRow.round, AggregateRow.gw, AggregateRow.k, AggregateRow.devices))
            return [Aggregate(int(r), str(gw), int(k), tuple(devs or ())) for r, gw, k, devs in rows]
    finally:
        engine.dispose()


def chaos_section(
    plan: ChaosPlan,
    demo_events: list[dict[str, Any]],
    fleet_events: list[dict[str, Any]],
    ledger: Ledger,
    started: float,
) -> dict[str, Any]:
    """The report's ``chaos`` section: the plan, what was injected when (``t``: seconds since the demo started;
    device faults as the fleet recorded them), and the ledger."""
    events = []
    for event in [*demo_events, *fleet_events]:
        row = dict(event)
        when = row.pop("time", None)
        if when is not None:
            row["t"] = round(when - started, 3)
        events.append(row)
    events.sort(key=lambda e: (e.get("t") is None, e.get("t") or 0.0))
    return {"spec": str(plan), "injected": events, **ledger.to_dict()}


__all__ = [
    "Aggregate",
    "Ledger",
    "ProcessChaos",
    "chaos_section",
    "check_plan",
    "load_aggregates",
    "reconcile",
]
