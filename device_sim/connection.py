"""The MQTT side of a simulated device: a configured paho client, a bounded first connect, and the exponential
backoff *with jitter* that ``device_sim.netloop.NetLoop`` reconnects it with.

paho's own reconnect (``loop_start`` + ``reconnect_delay_set``) doubles a fixed delay: every device that lost the
same broker at the same instant retries at the same instants, so a restarted broker meets the whole fleet at once,
again and again. The network loop drives paho itself and draws each wait at random (``Backoff``).
"""

from __future__ import annotations

import logging
import random
import socket
import time

import paho.mqtt.client as mqtt

from flcore.endpoints import BrokerAddress

log = logging.getLogger(__name__)


def client_id(fleet: str, dev: str) -> str:
    """The MQTT client id of a simulated device: unique per (fleet, device), and distinct from a real board's
    ``iotfl-dev-<dev>``, so two fleets on one broker never take each other's connections."""
    return f"iotfl-sim-{fleet}-{dev}"


def make_client(client_id: str, address: BrokerAddress, tls_ca: str | None = None) -> mqtt.Client:
    """A paho client (callback API v2, MQTT 3.1.1, clean session) that reconnects with a capped backoff."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(ca_certs=tls_ca)
    client.reconnect_delay_set(min_delay=1, max_delay=8)
    return client


def connect(client: mqtt.Client, address: BrokerAddress, keepalive: int, retries: int) -> None:
    """Open the connection, trying ``1 + retries`` times with a jittered backoff; raise ConnectionError."""
    delay = 0.1
    for attempt in range(retries + 1):
        try:
            client.connect(address.host, address.port, keepalive)
            return
        except OSError as exc:
            if attempt == retries:
                raise ConnectionError(
                    f"cannot connect to the MQTT broker at {address.host}:{address.port} after {retries + 1} "
                    f"attempts: {exc.strerror or exc}"
                ) from None
            log.debug("connect attempt %d to %s:%d failed: %s", attempt + 1, address.host, address.port, exc)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 2.0)


class Backoff:
    """Exponential backoff with full jitter: wait ``n`` is uniform in ``[0, min(cap, base·2ⁿ)]``.

    Full jitter spreads clients that failed together over the whole window, so each retry wave is flat rather
    than a spike (see "Exponential Backoff And Jitter", AWS Architecture Blog, 2015).
    """

    def __init__(self, base: float, cap: float, rng: random.Random | None = None):
        if base <= 0 or cap < base:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base} cap={cap}")
        self.base, self.cap = base, cap
        self.attempts = 0
        self._rng = rng or random.Random()

    def window(self) -> float:
        """The upper bound of the next wait."""
        return min(self.cap, self.base * 2.0 ** min(self.attempts, 60))

    def next(self) -> float:
        delay = self._rng.uniform(0.0, self.window())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


def cut(client: mqtt.Client, close: bool) -> None:
    """Shut the client's TCP connection down under paho (``close`` also frees the socket)."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if close:
            sock.close()


__all__ = ["Backoff", "client_id", "connect", "cut", "make_client"]
