"""The gateway's MQTT connection: one paho client on its own network thread, resubscribing on every reconnect."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from flcore.endpoints import BrokerAddress

log = logging.getLogger(__name__)

KEEPALIVE = 30
RECONNECT_MIN_DELAY = 1
RECONNECT_MAX_DELAY = 30

MessageHandler = Callable[[str, bytes], None]


class MqttLink:
    """A persistent-session paho client that subscribes to ``subscriptions`` (topic filter → handler).

    Handlers run on paho's network thread; an exception in one is logged and never reaches paho. ``on_connected``
    runs after each (re)connect, once the subscriptions were requested (the gateway republishes its task there).
    """

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        subscriptions: dict[str, MessageHandler],
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.subscriptions = dict(subscriptions)
        self.on_connected = on_connected
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.subscribed_at = 0.0  # time.monotonic() of the last SUBACK
        self.errors = 0
        self._stopping = False
        # A persistent session keeps QoS1 updates queued at the broker while the gateway reconnects.
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, protocol=paho.MQTTv311
        )
        self.client.reconnect_delay_set(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY)
        if address.username is not None:
            self.client.username_pw_set(address.username, address.password)
        if address.tls:
            self.client.tls_set()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
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
        if self.connected.is_set() and not self._stopping:
            log.warning("disconnected from broker %s:%d (%s); reconnecting", *self._where(), reason)
        self.connected.clear()
        self.subscribed.clear()

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, reasons: list, props: object) -> None:
        refused = [r for r in reasons if getattr(r, "is_failure", False)]
        if refused:
            log.error("broker refused a subscription: %s (check the ACL for this gateway)", refused)
        self.subscribed_at = time.monotonic()
        self.subscribed.set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "replace")
        try:
            for pattern, handler in self.subscriptions.items():
                if paho.topic_matches_sub(pattern, topic):
                    handler(topic, bytes(msg.payload))
                    return
        except Exception:
            self.errors += 1
            log.exception("handling a message on %r failed", topic)


def _no_delay(client: paho.Client) -> None:
    """Send acks at once: with Nagle's algorithm a PUBLISH waits ~40 ms behind the broker's delayed TCP ack."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket (e.g. a websocket wrapper): nothing to tune


__all__ = ["MqttLink", "MessageHandler"]
