"""One gateway on the broker: ingest updates, track live devices, publish tasks and acks, decide when to close.

``GatewayNode`` is the MQTT side of the gateway without the cloud, so tests (and the service) drive it directly:
``open_sub_round(task)`` → ``wait_closed(deadline)`` → ``close_sub_round()``. Every ingest, status and close
decision happens under one ``threading.Condition``; paho's network thread (statuses) and the ``UpReader``'s thread
(batches of updates, on a connection of their own) notify it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from flcore.encodings import ACCEPTED_BY_DEFAULT
from flcore.endpoints import BrokerAddress
from flcore.errors import WireError
from flcore.fedavg import WeightedSum
from flcore.messages import Status, Task
from flcore.robust import FEDAVG, RuleParams
from flcore.selection import task_select
from flcore.topics import GatewayTopics, device_of_status, status_wildcard
from gateway.broker_stats import DROPPED_TOPIC, BrokerStats
from gateway.collector import JOURNAL_ERROR, Collector, KeyRing
from gateway.dedup import Dedup, LocalDedup, open_dedup
from gateway.device_keys import DeviceKeys
from gateway.device_log import DeviceLog
from gateway.journal import Journal
from gateway.metrics import GatewayMetrics
from gateway.mqtt import MqttLink
from gateway.mqtt_reader import MAX_BATCH, Handled, UpReader
from gateway.pause import Pause
from gateway.roster import Roster
from gateway.settings import GatewaySettings
from gateway.state_db import StateError
from gateway.verdicts import Accepted, RoundTotals, SubRound

log = logging.getLogger(__name__)

WAIT_SLICE = 0.25
# Retained statuses arrive just after a (re)subscription, with no end marker: until they had time to, the roster
# may miss live devices, so "every live device answered" is not trusted before then.
ROSTER_SETTLE = 0.5


class GatewayNode:
    """The gateway's MQTT-facing state machine for one (round, sub) at a time."""

    def __init__(
        self,
        gw: str,
        address: BrokerAddress,
        *,
        fleet: str = "default",
        quorum: int = 0,
        quorum_fraction: float = 0.0,
        max_bytes: int = 1 << 20,
        max_samples: int = 100_000,
        journal: Journal | None = None,
        pause: Pause | None = None,
        keys: KeyRing | None = None,
        aggregation: str = FEDAVG,
        rule_params: RuleParams | None = None,
        broker_ca: Path | None = None,
        encodings: Iterable[str] = ACCEPTED_BY_DEFAULT,
        dedup: Dedup | None = None,
        share_group: str = "",
        worker: str = "",
    ) -> None:
        """``keys`` (device id → key or None) makes every update need its device's signature; ``broker_ca`` is the
        CA file an mqtts:// broker's certificate must chain to; ``encodings`` are the update encodings accepted.

        ``share_group`` makes this one ``worker`` of the gateway: updates arrive over an MQTT 5 shared subscription
        and ``dedup`` (``gateway.dedup``) decides which of them this worker counts (docs/scale-out.md)."""
        self.dedup = dedup or LocalDedup()
        self.topics = GatewayTopics(fleet, gw)
        self.quorum = quorum
        self.quorum_fraction = quorum_fraction
        self.journal = journal
        self.pause = pause or Pause()
        self.broker_stats = BrokerStats()
        self.metrics = GatewayMetrics()
        self.collector = Collector(
            self.topics,
            max_bytes=max_bytes,
            max_samples=max_samples,
            keys=keys,
            aggregation=aggregation,
            rule_params=rule_params,
            encodings=encodings,
            shared=self.dedup if share_group else None,
        )
        self.roster = Roster(gw)
        self.device_log = DeviceLog(gw)
        self.cond = threading.Condition()
        self._task: bytes | None = None
        self.link = MqttLink(
            address,
            f"iotfl-gw-{gw}-{worker}" if worker else f"iotfl-gw-{gw}",
            {status_wildcard(fleet): self._on_status, DROPPED_TOPIC: self.broker_stats.on_dropped},
            on_connected=self._republish_task,
            optional=frozenset({DROPPED_TOPIC}),
            ca=broker_ca,
        )
        # Updates come on a connection of their own, read by a lean client: paho's per-packet cost was the hot path.
        self.ups = UpReader(
            address,
            f"iotfl-gw-{gw}-{worker}-up" if worker else f"iotfl-gw-{gw}-up",
            self.topics.up_wildcard,
            self._on_ups,
            ca=broker_ca,
            on_subscribed=self._republish_task,
            # The test hook counts arrivals update by update: batches of one keep its windows exact.
            max_batch=1 if self.pause.target is not None else MAX_BATCH,
            on_puback=self.metrics.acknowledged,
            share_group=share_group,
        )

    @classmethod
    def from_settings(cls, settings: GatewaySettings, journal: Journal | None = None) -> GatewayNode:
        return cls(
            settings.id,
            settings.broker_address,
            fleet=settings.fleet,
            quorum=settings.quorum,
            quorum_fraction=settings.quorum_fraction,
            max_bytes=settings.max_update_bytes,
            max_samples=settings.max_samples,
            journal=journal,
            pause=Pause(settings.pause_at),
            keys=None if settings.device_keys is None else DeviceKeys(settings.device_keys),
            aggregation=settings.aggregation,
            rule_params=settings.rule_params,
            broker_ca=settings.broker_ca,
            encodings=settings.accepted_encodings,
            dedup=open_dedup(settings.dedup, settings.fleet, settings.id, settings.worker_id),
            share_group=settings.share_group,
            worker=settings.worker_id,
        )

    def start(self, timeout: float = 10.0) -> bool:
        """Connect and subscribe; True when subscribed within ``timeout`` (else both clients keep retrying)."""
        if self.journal is not None:
            seqs = self.journal.seqs()  # before any update arrives: a replayed old seq must not slip in
            with self.cond:
                self.collector.remember_seqs(seqs)
        started = time.monotonic()
        control = self.link.start(timeout)
        return self.ups.start(max(0.0, timeout - (time.monotonic() - started))) and control

    @property
    def connected(self) -> bool:
        """Whether both connections (control traffic and updates) are up."""
        return self.link.connected.is_set() and self.ups.connected.is_set()

    def stop(self) -> None:
        self.ups.stop()
        self.link.stop()
        self.dedup.close()

    @property
    def counters(self) -> Counter[str]:
        with self.cond:
            return Counter(self.collector.counters)

    @property
    def devices_live(self) -> int:
        """Devices whose retained status names this gateway (or that sent an update since)."""
        with self.cond:
            return len(self.roster.live)

    @property
    def totals(self) -> RoundTotals | None:
        return self.collector.totals

    def select(self, fraction: float | None, round: int, sub: int) -> list[str] | float | None:
        """The ``select`` of this gateway's task for (round, sub): ``flcore.selection.task_select`` over its live
        devices (known once their retained statuses had time to arrive)."""
        with self.cond:
            live = set(self.roster.live)
        return task_select(fraction, live, self._roster_settled(), self.roster.gw, round, sub)

    def report(self, since: int) -> tuple[int, dict[str, Any]]:
        """A report for the cloud (``gateway.reporter``) with the device statuses that changed after ``since``, and
        the status sequence number it is complete up to."""
        with self.cond:
            totals = self.collector.totals
            body = {
                "round": totals.round if totals else 0,
                "accepted": totals.k if totals else 0,
                "devices_in_round": len(totals.devices) if totals else 0,
                "live": len(self.roster.live),
                "bytes_up": totals.bytes_up if totals else 0,
                "counters": dict(self.collector.counters),
                "devices": self.device_log.changed_since(since),
            }
            return self.device_log.seq, body

    def publish_task(self, task: Task) -> paho.MQTTMessageInfo | None:
        """Replace the retained task (republished after every reconnect); the returned info tells when the broker has
        it. Until both connections are up it is only kept (None): they publish it once updates have a subscriber."""
        payload = task.encode()
        with self.cond:
            self._task = payload
        return self._republish_task()

    def open_sub_round(self, task: Task, replay: Iterable[tuple[str, bytes]] = (), publish: bool = True) -> None:
        """Start collecting for ``task``'s (round, sub); ``replay`` re-ingests journaled payloads first, then updates
        parked while no sub-round was open (async mode) are judged against this one and answered."""
        opening = SubRound(task.round, task.sub, task.base, task.spec.param_count, task.layers)
        with self.cond:
            self.collector.open(opening)
            replayed = []
            for topic, payload in replay:
                verdict = self.collector.ingest(topic, payload, journaled=True)
                if verdict is not None and verdict.update is not None:
                    self.roster.on_update(verdict.dev)
                    replayed.append((verdict.update.round, verdict.update.sub, verdict.dev))
            self.dedup.committed(replayed)  # in the journal already: count them towards the gateway's close
            parked = self.collector.take_parked()
            self.cond.notify_all()
        if publish:
            self.publish_task(task)
        if parked:  # their PUBACKs went out when they were parked
            for topic, payload in self._on_ups(parked).replies:
                self.link.publish(topic, payload)

    def set_mode(self, mode: str) -> None:
        """``sync`` or ``async`` (the cloud's round mode): how updates behind the open round are judged."""
        with self.cond:
            self.collector.mode = mode

    def remember(self, accepted: dict[int, set[tuple[str, int]]]) -> None:
        """Dedup keys of rounds accepted before a restart (from the journal), so redeliveries get ``duplicate``."""
        with self.cond:
            for rnd, keys in sorted(accepted.items()):
                self.collector.remember(rnd, keys)

    def hold_closed(self, task: Task) -> None:
        """Judge updates against ``task``'s (round, sub) as already closed: a round forwarded before a restart.

        Redeliveries of what was accepted are answered ``duplicate`` (see ``remember``), anything else ``late``.
        """
        with self.cond:
            self.collector.open(SubRound(task.round, task.sub, task.base, task.spec.param_count, task.layers))
            self.collector.close()
            self.cond.notify_all()

    def wait_closed(self, deadline: float, stop: threading.Event | None = None) -> str:
        """Block until the open sub-round may close; returns ``quorum``, ``quorum_fraction``, ``all_answered``,
        ``deadline`` or ``stop``.

        ``deadline`` is unix seconds, like the task's.
        """
        with self.cond:
            while True:
                reason = self._close_reason()
                if reason is not None:
                    return reason
                if stop is not None and stop.is_set():
                    return "stop"
                left = deadline - time.time()
                if left <= 0:
                    return "deadline"
                self.cond.wait(min(left, WAIT_SLICE))

    def close_sub_round(self, journal: bool = True) -> WeightedSum:
        """Close the open sub-round (later updates for it are answered ``late``) and return its running sum."""
        with self.cond:
            total = self.collector.close()
            if journal and self.journal is not None and self.collector.opening is not None:
                self.journal.closed(self.collector.opening.sub)
            return total

    def _close_reason(self) -> str | None:
        opening, total = self.collector.opening, self.collector.sum
        if opening is None or total is None or self.collector.closed:
            return None
        answered, k = self.collector.sub_devices, total.k
        shared = self.dedup.answered(opening.round, opening.sub)  # every worker's, when workers share the gateway
        if shared is not None:
            answered, k = shared, len(shared)
        reason = self.roster.close_reason(opening.round, opening.sub, answered, k, self.quorum, self.quorum_fraction)
        # Both count the live devices, which are known only once their retained statuses had time to arrive.
        if reason in ("all_answered", "quorum_fraction") and not self._roster_settled():
            return None
        return reason

    def _roster_settled(self) -> bool:
        link = self.link
        return link.subscribed.is_set() and time.monotonic() - link.subscribed_at >= ROSTER_SETTLE

    def _on_ups(self, batch: list[tuple[str, bytes]]) -> Handled:
        """Judge a batch of updates, commit the accepted ones to the journal in one transaction, then fold them in
        (group commit); returns, per message, whether its PUBACK may go out, and the acks to publish after them.

        When the journal cannot commit, no message of the batch is acked, counted or PUBACKed (all False): the broker
        redelivers them after the next reconnect and devices re-send, so nothing is acknowledged that could be lost.
        """

        def journal(accepted: list[Accepted]) -> None:
            self.pause.reached("before_journal")
            if self.journal is not None:
                opening = self.collector.opening
                self.journal.updates(accepted, into_sub=opening.sub if opening else None)
            self.dedup.committed([(a.update.round, a.update.sub, a.update.dev) for a in accepted])

        self.metrics.received(sum(len(payload) for _, payload in batch))
        with self.cond:
            try:
                verdicts = self.collector.ingest_batch(batch, journal)
            except StateError as exc:
                self.collector.counters[JOURNAL_ERROR] += 1
                log.error("could not journal %d update(s), not acknowledging them: %s", len(batch), exc)
                return Handled([False] * len(batch), [])
            answered = [v for v in verdicts if v is not None]
            accepted = [v for v in answered if v.update is not None]
            for verdict in accepted:
                self.roster.on_update(verdict.dev)
            if accepted:
                self.cond.notify_all()
        if accepted:
            self.pause.reached("before_ack")
        return Handled([True] * len(batch), [(self.topics.ack(v.dev), v.ack.encode()) for v in answered])

    def _on_status(self, topic: str, payload: bytes) -> None:
        dev = device_of_status(self.topics.fleet, topic)
        if dev is None:
            return
        status: Status | None = None
        if payload:
            try:
                status = Status.decode(payload)
            except WireError as exc:
                log.info("ignored a bad status from %s: %s", dev, exc)
                return
            if status.dev != dev:
                log.info("ignored a status on %s's topic naming %s", dev, status.dev)
                return
        with self.cond:
            self.roster.on_status(dev, status)
            self.device_log.on_status(dev, status, time.time())
            self.cond.notify_all()

    def _republish_task(self) -> paho.MQTTMessageInfo | None:
        """Publish the task once both connections are up (each calls this after its (re)connect): a device answers
        the task at once, and a fresh session queues no update for the gateway before its SUBACK."""
        if not (self.link.connected.is_set() and self.ups.subscribed.is_set()):
            return None  # the other connection publishes it when it is up
        with self.cond:
            payload = self._task
        return None if payload is None else self.link.publish(self.topics.task, payload, retain=True)


__all__ = ["GatewayNode"]
