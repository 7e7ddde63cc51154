"""The MQTT side of a simulated device: a configured paho client, a bounded first connect, and the network thread
that keeps it connected with exponential backoff *with jitter*.

paho's own reconnect (``loop_start`` + ``reconnect_delay_set``) doubles a fixed delay: every device that lost the
same broker at the same instant retries at the same instants, so a restarted broker meets the whole fleet at once,
again and again. ``NetworkLoop`` drives paho itself (``Client.loop``) and draws each wait at random.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time

import paho.mqtt.client as mqtt

from flcore.endpoints import BrokerAddress

log = logging.getLogger(__name__)

LOOP_SLICE = 0.5  # seconds one paho loop() call may block: how fast a stop is noticed


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


class NetworkLoop:
    """Runs one paho client's network on its own thread and reconnects it after ``Backoff`` waits.

    The backoff starts over only after a connection stayed up ``stable_after`` seconds: two clients that share a
    client id take the connection from each other at once, and a backoff that reset on every CONNACK would let
    them do so forever (a *kick loop*); this way such a pair slows down to one attempt per ``cap`` seconds.
    """

    def __init__(self, client: mqtt.Client, backoff: Backoff, stable_after: float, name: str):
        self.client = client
        self.backoff = backoff
        self.stable_after = stable_after
        self.name = name
        self._halt = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        # With no paho thread, paho writes a publish straight to the socket from the publishing thread, racing
        # this loop's writes; a registered write callback makes it leave every write to this loop.
        client.on_socket_register_write = _leave_writes_to_the_loop

    def start(self, connected: bool) -> None:
        """Start the thread; ``connected`` says whether ``client.connect()`` already succeeded."""
        self._thread = threading.Thread(target=self._run, args=(not connected,), name=self.name, daemon=True)
        self._thread.start()

    def close(self, timeout: float) -> None:
        """Let the loop write what is queued (e.g. a DISCONNECT), then end it; bounded by ``timeout``."""
        self._closing = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(LOOP_SLICE * 2)

    def halt(self, wait: bool = True) -> None:
        """End the loop without touching the connection (the device "loses power"); the thread is gone within
        one ``LOOP_SLICE``, and ``wait`` waits for that."""
        self._halt.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(LOOP_SLICE * 4)

    def _run(self, need_connect: bool) -> None:
        up_since: float | None = None
        while not self._halt.is_set():
            if need_connect:
                if self._closing:
                    return
                try:
                    self.client.reconnect()
                    need_connect = False
                except (OSError, ValueError) as exc:
                    self._wait(f"reconnect failed ({exc})")
                    continue
            try:
                rc = self.client.loop(LOOP_SLICE)
            except Exception:  # a callback that raised: paho's state is unknown, so start the connection over
                log.exception("%s: network loop failed; reconnecting", self.name)
                cut(self.client, close=True)
                rc = mqtt.MQTT_ERR_UNKNOWN
            if up_since is None and self.client.is_connected():
                up_since = time.monotonic()
            if rc == mqtt.MQTT_ERR_SUCCESS:
                continue
            if self._closing and self.client.socket() is None:
                return  # the DISCONNECT went out
            need_connect = True
            if up_since is not None and time.monotonic() - up_since >= self.stable_after:
                self.backoff.reset()
            up_since = None
            self._wait(f"connection lost ({mqtt.error_string(rc)})")

    def _wait(self, why: str) -> None:
        delay = self.backoff.next()
        log.debug("%s: %s; next attempt in %.2f s (attempt %d)", self.name, why, delay, self.backoff.attempts)
        self._halt.wait(delay)


def _leave_writes_to_the_loop(_client: mqtt.Client, _userdata: object, _sock: object) -> None:
    """A no-op write callback: the queued packet wakes ``NetworkLoop``'s select, which writes it."""


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


__all__ = ["Backoff", "NetworkLoop", "client_id", "connect", "cut", "make_client"]
