"""The gateway's control connection: one paho client on its own network thread, resubscribing on every reconnect.

It carries statuses, the retained task and the broker's own topics; updates come on a connection of their own
(``gateway.mqtt_reader``). PUBACKs are manual (paho's ``manual_ack``): the broker gets the PUBACK for an incoming
QoS 1 message only after its handler returned. A handler that returns ``False`` (it could not handle the message
durably) gets no PUBACK at all, so the broker redelivers the message after the next reconnect.

Reconnects are jittered: paho's own backoff doubles a fixed delay, so every gateway that lost the broker together
would come back in lockstep. After each lost connection or failed attempt the link draws the next wait itself —
full jitter over ``[0, min(RECONNECT_MAX_DELAY, RECONNECT_FIRST · 2^(failures − 1))]`` — and hands it to paho as
its next delay; paho's reconnect loop still does the waiting (stop-aware: ``stop()`` ends it within a second).
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable
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

# Returns False to withhold the PUBACK (the message was not durably handled); None or True acknowledges it.
MessageHandler = Callable[[str, bytes], bool | None]


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


class MqttLink:
    """A persistent-session paho client that subscribes to ``subscriptions`` (topic filter → handler).

    Handlers run on paho's network thread; an exception in one is logged and never reaches paho (the message is
    acknowledged: redelivering it would only fail again).
    ``on_connected`` runs after each (re)connect, once the subscriptions were requested (the gateway republishes its
    task there). Topics in ``optional`` may be refused by the broker's ACL without an error (a warning says what is
    missing). An mqtts:// broker's certificate must chain to ``ca`` (default: the system's CAs), over TLS 1.2 or
    newer.
    """

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        subscriptions: dict[str, MessageHandler],
        on_connected: Callable[[], object] | None = None,
        optional: frozenset[str] = frozenset(),
        rng: random.Random | None = None,
        ca: Path | None = None,
    ) -> None:
        self.address = address
        self.subscriptions = dict(subscriptions)
        # Split once: paho's topic_matches_sub builds a matcher on every call, a cost paid per message.
        self._routes = [(TopicFilter(pattern), handler) for pattern, handler in self.subscriptions.items()]
        self.optional = optional
        self.withheld = 0  # PUBACKs withheld because a handler could not handle a message durably
        self.on_connected = on_connected
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.subscribed_at = 0.0  # time.monotonic() of the last SUBACK
        self.errors = 0
        self.failures = 0  # lost connections and failed attempts since the last CONNACK
        self.delays: list[float] = []  # the last reconnect waits drawn (seconds)
        self._rng = rng or random.Random()
        self._stopping = False
        # A persistent session keeps the QoS 1 statuses published while the gateway reconnects (updates have their
        # own session: gateway.mqtt_reader).
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
        self.client.connect_async(self.address.host, self.address.port, keepalive=KEEPALIVE)
        self.client.loop_start()
        if not self.subscribed.wait(timeout):
            log.warning("broker %s:%d not reachable yet; retrying in the background", *self._where())
            return False
        return True

    def stop(self) -> None:
        """Disconnect."""
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()
        self.subscribed.clear()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> paho.MQTTMessageInfo:
        """QoS 1; while disconnected paho queues the message and sends it after the reconnect."""
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def _where(self) -> tuple[str, int]:
        return self.address.host, self.address.port

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker %s:%d refused the connection: %s", *self._where(), reason)
            return
        _no_delay(client)
        self.failures = 0
        client.subscribe([(topic, 1) for topic in self.subscriptions])
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
        topics = list(self.subscriptions)
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
        handler = next((h for f, h in self._routes if f.matches(levels)), None)
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


def _no_delay(client: paho.Client) -> None:
    """Send acks at once: with Nagle's algorithm a PUBLISH waits ~40 ms behind the broker's delayed TCP ack."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket (e.g. a websocket wrapper): nothing to tune


__all__ = ["MessageHandler", "MqttLink", "TopicFilter"]
