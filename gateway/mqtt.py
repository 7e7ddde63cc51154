"""The gateway's MQTT connection: one paho client on its own network thread, resubscribing on every reconnect.

PUBACKs are manual (paho's ``manual_ack``): the broker gets the PUBACK for an incoming QoS 1 message only after its
handler returned, i.e. after an accepted update was committed to the journal. A handler that returns ``False``
(the journal could not commit) gets no PUBACK at all, so the broker redelivers the message after the next reconnect.

A *batched* subscription (the gateway's ``up`` wildcard) is not handled on paho's network thread: messages go to an
inbox, and one ingest thread hands the handler everything that arrived meanwhile (up to ``MAX_BATCH``) as one list,
so the gateway commits their journal entries together (one fsync for the batch: group commit) and the network thread
keeps reading while it does. The PUBACKs follow the handler's return, message by message, as above, and then the
replies it returned (the gateway's acks) are published. A message
received on an earlier connection gets no PUBACK: the broker redelivers it on the new one (persistent session).

Reconnects are jittered: paho's own backoff doubles a fixed delay, so every gateway that lost the broker together
would come back in lockstep. After each lost connection or failed attempt the link draws the next wait itself —
full jitter over ``[0, min(RECONNECT_MAX_DELAY, RECONNECT_FIRST · 2^(failures − 1))]`` — and hands it to paho as
its next delay; paho's reconnect loop still does the waiting (stop-aware: ``stop()`` ends it within a second).
"""

from __future__ import annotations

import logging
import queue
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from flcore.endpoints import BrokerAddress, is_loopback
from gateway.forwarder import backoff_pause
from gateway.tls import tls_context

log = logging.getLogger(__name__)

KEEPALIVE = 30
RECONNECT_FIRST = 1.0
RECONNECT_MAX_DELAY = 30.0
# The drawn reconnect waits kept for the status and for tests.
DELAYS_KEPT = 32

# Messages handed to a batched handler at once at most: bounds the latency of the first one's ack.
MAX_BATCH = 500
STOP_JOIN = 5.0

# Returns False to withhold the PUBACK (the message was not durably handled); None or True acknowledges it.
MessageHandler = Callable[[str, bytes], bool | None]


@dataclass(frozen=True)
class Handled:
    """A batch handler's answer: per message (in order) whether its PUBACK may go out, and the QoS 1 replies
    (topic, payload) to publish once those PUBACKs are queued."""

    flags: list[bool]
    replies: list[tuple[str, bytes]]


BatchHandler = Callable[[list[tuple[str, bytes]]], Handled]


class TopicFilter:
    """An MQTT topic filter split into levels once, matched like ``paho.mqtt.client.topic_matches_sub``."""

    def __init__(self, pattern: str) -> None:
        self.levels = pattern.split("/")
        self.multi = self.levels[-1] == "#"  # `a/#` also matches `a`
        if self.multi:
            self.levels.pop()
        self.wild_first = not self.levels or self.levels[0] == "+"

    def matches(self, levels: list[str]) -> bool:
        """Whether a topic (split at ``/``) matches; a topic starting with ``$`` never matches a leading wildcard."""
        if len(levels) != len(self.levels) and not (self.multi and len(levels) >= len(self.levels)):
            return False
        if self.wild_first and levels[0].startswith("$"):
            return False
        return all(f == "+" or f == t for f, t in zip(self.levels, levels, strict=False))


@dataclass(frozen=True)
class _Inbound:
    """A message waiting for the ingest thread, with what its PUBACK needs."""

    handler: BatchHandler
    topic: str
    payload: bytes
    mid: int
    qos: int
    session: int
    received: float = field(default_factory=time.monotonic)


class MqttLink:
    """A persistent-session paho client that subscribes to ``subscriptions`` (topic filter → handler).

    Handlers run on paho's network thread, ``batched`` ones on the link's ingest thread; an exception in one is
    logged and never reaches paho (the message is acknowledged: redelivering it would only fail again).
    ``on_connected`` runs after each (re)connect, once the subscriptions were requested (the gateway republishes its
    task there); ``on_puback`` gets, per handled batch, the seconds each of its acknowledged messages waited from
    arrival to PUBACK. Topics in ``optional`` may be refused by the broker's ACL without an error (a warning says
    what is missing). An mqtts:// broker's certificate must chain to ``ca`` (default: the system's CAs), over TLS 1.2
    or newer.
    """

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        subscriptions: dict[str, MessageHandler],
        on_connected: Callable[[], None] | None = None,
        optional: frozenset[str] = frozenset(),
        rng: random.Random | None = None,
        ca: Path | None = None,
        batched: dict[str, BatchHandler] | None = None,
        max_batch: int = MAX_BATCH,
        on_puback: Callable[[list[float]], None] | None = None,
        share_group: str = "",
    ) -> None:
        """``share_group`` subscribes the ``batched`` filters as MQTT 5 shared subscriptions
        (``$share/<group>/<filter>``): the broker hands each message to one of the group's clients."""
        self.address = address
        self.on_puback = on_puback
        self.subscriptions = dict(subscriptions)
        self.batched = dict(batched or {})
        self.share_group = share_group
        self.max_batch = max_batch
        # Split once: paho's topic_matches_sub builds a matcher on every call, a cost paid per message.
        self._routes: list[tuple[TopicFilter, MessageHandler | None, BatchHandler | None]] = [
            *((TopicFilter(pattern), handler, None) for pattern, handler in self.subscriptions.items()),
            *((TopicFilter(pattern), None, batch_handler) for pattern, batch_handler in self.batched.items()),
        ]
        self.optional = optional
        self.withheld = 0  # PUBACKs withheld because a handler could not handle a message durably
        self.pubacked = 0  # PUBACKs sent for QoS 1 messages of the batched subscriptions
        self.on_connected = on_connected
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.subscribed_at = 0.0  # time.monotonic() of the last SUBACK
        self.errors = 0
        self.failures = 0  # lost connections and failed attempts since the last CONNACK
        self.delays: list[float] = []  # the last reconnect waits drawn (seconds)
        self._rng = rng or random.Random()
        self._stopping = False
        self._session = 0  # counts CONNACKs: a PUBACK belongs to the connection its message came on
        self._inbox: queue.SimpleQueue[_Inbound | None] = queue.SimpleQueue()
        self._ingest: threading.Thread | None = None
        # A persistent session keeps QoS1 updates queued at the broker while the gateway reconnects.
        if share_group:  # shared subscriptions are MQTT 5
            self.client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, manual_ack=True
            )
        else:
            self.client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                clean_session=False,
                protocol=paho.MQTTv311,
                manual_ack=True,
            )
        self.client.reconnect_delay_set(RECONNECT_FIRST, RECONNECT_MAX_DELAY)  # type: ignore[arg-type]
        if address.username is not None:
            self.client.username_pw_set(address.username, address.password)
        if address.tls:
            self.client.tls_set_context(tls_context(ca))
        elif not is_loopback(address.host):
            log.warning(
                "broker %s is plain mqtt://: passwords and updates cross the network in clear; "
                "for a local demo only (use mqtts://, see docs/security.md)",
                address,
            )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def start(self, timeout: float) -> bool:
        """Connect in the background (paho retries by itself); True when subscribed within ``timeout`` seconds."""
        if self.batched and self._ingest is None:
            self._ingest = threading.Thread(target=self._drain, name="mqtt-ingest", daemon=True)
            self._ingest.start()
        if self.share_group:
            # No persistent session: a broker may keep handing a dead member's session its share of the messages;
            # without one, the live members get them all, and what the dead one never PUBACKed devices re-send.
            self.client.connect_async(self.address.host, self.address.port, keepalive=KEEPALIVE, clean_start=True)
        else:
            self.client.connect_async(self.address.host, self.address.port, keepalive=KEEPALIVE)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            log.warning("broker %s:%d not reachable yet; retrying in the background", *self._where())
            return False
        return True

    def stop(self) -> None:
        """Disconnect; messages still in the inbox get no PUBACK (the broker redelivers them to the next session)."""
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()
        self.subscribed.clear()
        if self._ingest is not None:
            self._inbox.put(None)
            self._ingest.join(STOP_JOIN)
            self._ingest = None

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> paho.MQTTMessageInfo:
        """QoS 1; while disconnected paho queues the message and sends it after the reconnect."""
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def _filters(self) -> list[str]:
        """What is subscribed: the batched filters behind ``$share/<group>/`` when shared."""
        shared = [f"$share/{self.share_group}/{f}" if self.share_group else f for f in self.batched]
        return [*self.subscriptions, *shared]

    def _where(self) -> tuple[str, int]:
        return self.address.host, self.address.port

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker %s:%d refused the connection: %s", *self._where(), reason)
            return
        _no_delay(client)
        self.failures = 0
        self._session += 1
        client.subscribe([(topic, 1) for topic in self._filters()])
        self.connected.set()
        log.info("connected to broker %s:%d", *self._where())
        if self.on_connected is not None:
            try:
                self.on_connected()
            except Exception:
                log.exception("reconnect handler failed")

    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if self._stopping:
            return
        delay = self._next_delay()
        if self.connected.is_set():
            log.warning("disconnected from broker %s:%d (%s); reconnecting in %.1f s", *self._where(), reason, delay)
        self.connected.clear()
        self.subscribed.clear()

    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        if not self._stopping:
            delay = self._next_delay()
            log.debug("broker %s:%d not reachable; next attempt in %.1f s", *self._where(), delay)

    def _next_delay(self) -> float:
        """Draw the wait before the next attempt and make it paho's next (and only) reconnect delay."""
        self.failures += 1
        delay = backoff_pause(self.failures, RECONNECT_FIRST, RECONNECT_MAX_DELAY, self._rng)
        self.delays = [*self.delays[-(DELAYS_KEPT - 1) :], delay]
        # Resets paho's own doubling: its next wait is exactly `delay`.
        self.client.reconnect_delay_set(delay, max(delay, RECONNECT_MAX_DELAY))  # type: ignore[arg-type]
        return delay

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reasons: list, props: object) -> None:
        topics = self._filters()
        refused = [t for t, r in zip(topics, reasons, strict=False) if getattr(r, "is_failure", False)]
        for topic in refused:
            if topic in self.optional:
                log.warning(
                    "broker refused the subscription to %s (the gateway's ACL needs `topic read %s`)", topic, topic
                )
            else:
                log.error("broker refused the subscription to %s (check the ACL for this gateway)", topic)
        self.subscribed_at = time.monotonic()
        self.subscribed.set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "replace")
        levels = topic.split("/")
        handler, batch_handler = next(((h, b) for f, h, b in self._routes if f.matches(levels)), (None, None))
        if batch_handler is not None:
            self._inbox.put(_Inbound(batch_handler, topic, bytes(msg.payload), msg.mid, msg.qos, self._session))
            return
        handled: bool | None = True
        try:
            if handler is not None:
                handled = handler(topic, bytes(msg.payload))
        except Exception:
            self.errors += 1
            log.exception("handling a message on %r failed", topic)
        self._puback(msg.mid, msg.qos, handled is not False)

    def _puback(self, mid: int, qos: int, handled: bool) -> None:
        if not handled:
            self.withheld += 1
            return
        self.client.ack(mid, qos)

    def _drain(self) -> None:
        """The ingest thread: hand each batched handler what arrived since its last call, then PUBACK."""
        while True:
            first = self._inbox.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._inbox.put(None)  # stop once this batch is handled
                    break
                batch.append(item)
            # One handler call per run of messages for the same subscription, in arrival order.
            start = 0
            while start < len(batch):
                end = start + 1
                while end < len(batch) and batch[end].handler is batch[start].handler:
                    end += 1
                self._handle(batch[start:end])
                start = end

    def _handle(self, run: list[_Inbound]) -> None:
        try:
            result = run[0].handler([(m.topic, m.payload) for m in run])
        except Exception:
            self.errors += 1
            log.exception("handling %d message(s) on %r failed", len(run), run[0].topic)
            result = Handled([True] * len(run), [])
        waits: list[float] = []
        for message, handled in zip(run, result.flags, strict=True):
            if message.session == self._session:
                self._puback(message.mid, message.qos, handled)
                self.pubacked += handled and message.qos > 0
                if handled and message.qos > 0:
                    waits.append(time.monotonic() - message.received)
        # Queued behind the PUBACKs: whoever sees a reply, the broker already has (or is about to get) the PUBACK.
        for topic, payload in result.replies:
            self.publish(topic, payload)
        if waits and self.on_puback is not None:  # after the replies: counting never delays an ack
            self.on_puback(waits)


def _no_delay(client: paho.Client) -> None:
    """Send acks at once: with Nagle's algorithm a PUBLISH waits ~40 ms behind the broker's delayed TCP ack."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket (e.g. a websocket wrapper): nothing to tune


__all__ = ["BatchHandler", "Handled", "MAX_BATCH", "MessageHandler", "MqttLink", "TopicFilter"]
