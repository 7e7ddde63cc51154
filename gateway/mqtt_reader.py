"""The gateway's lean reader for its ``up`` subscription: its own MQTT connection, many updates per ``recv``.

paho spends more CPU per received packet than the whole ingest of an update (a ``recv`` per header byte, an object
per message, a ``Condition`` per published ack), so the hot path has a client of its own: one thread reads the socket
in large chunks, splits every complete PUBLISH off them at once (``gateway.mqtt_packets``) and queues them for the
commit thread, which hands them to the batch handler (at most ``max_batch`` at a time, whatever queued meanwhile:
the journal commits one batch while the reader parses the next). The commit thread passes each handled batch back
through a queue and a wakeup socket the reader selects on; the reader alone writes the socket (TLS objects stay
single-threaded): the batch's PUBACKs and the handler's replies (the gateway's acks, QoS 1 PUBLISH packets built by
hand) in one ``sendall``. Batches are handled one at a time, in arrival order: the fold keeps the journal's order.

Durability: a PUBACK goes out only after the handler returned, i.e. after the batch's journal commit; a message the
handler flags False (the journal could not commit) gets none, so the broker redelivers it on the next connection.
Everything happens on the connection the message came on: if that connection drops meanwhile, the write fails and
the broker redelivers the unacknowledged messages to the next one (persistent session, ``clean_session`` false).
Replies the broker has not PUBACKed yet are re-sent (DUP) after a reconnect.

Keepalive: a PINGREQ after ``KEEPALIVE / 2`` seconds without writing; a broker silent for 1.5 × ``KEEPALIVE`` is
taken as gone. Reconnects wait a full-jitter backoff like ``MqttLink``'s.
"""

from __future__ import annotations

import logging
import queue
import random
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flcore.endpoints import BrokerAddress
from gateway import mqtt_packets as packets
from gateway.forwarder import backoff_pause
from gateway.mqtt import DELAYS_KEPT, KEEPALIVE, RECONNECT_FIRST, RECONNECT_MAX_DELAY
from gateway.tls import tls_context

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
# How often a blocked read wakes to check keepalive and stop.
TICK = 0.5
READ_SIZE = 1 << 18
MAX_BATCH = 500
STOP_JOIN = 5.0
SUBSCRIBE_ID = 1


@dataclass(frozen=True)
class Handled:
    """A batch handler's answer: per message (in order) whether its PUBACK may go out, and the QoS 1 replies
    (topic, payload) to publish right after those PUBACKs."""

    flags: list[bool]
    replies: list[tuple[str, bytes]]


BatchHandler = Callable[[list[tuple[str, bytes]]], Handled]


_Up = tuple[str, bytes, int, float, int]


class BrokerRefused(ConnectionError):
    """The broker answered CONNECT with a refusal (bad credentials, not authorized, ...)."""


class UpReader:
    """A persistent-session MQTT 3.1.1 client subscribed (QoS 1) to one topic filter, feeding ``handler`` in batches.

    An exception in the handler is logged and its messages are PUBACKed (redelivering them would only fail again).
    ``on_subscribed`` runs on the reader's thread after each SUBACK; ``on_puback`` gets, per handled batch, the
    seconds each of its acknowledged updates waited from arrival (the ``recv`` that completed its batch) to PUBACK.
    An mqtts:// broker's certificate must chain to ``ca`` (default: the system's CAs), over TLS 1.2 or newer.
    """

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        topic_filter: str,
        handler: BatchHandler,
        *,
        ca: Path | None = None,
        rng: random.Random | None = None,
        max_batch: int = MAX_BATCH,
        on_subscribed: Callable[[], object] | None = None,
        on_puback: Callable[[list[float]], None] | None = None,
        share_group: str = "",
    ) -> None:
        """``share_group`` subscribes as one member of a shared subscription (``$share/<group>/<filter>``, which
        mosquitto serves to MQTT 3.1.1 clients too): the broker hands each message to one of the group's members."""
        self.address = address
        self.on_subscribed = on_subscribed
        self.on_puback = on_puback
        self.client_id = client_id
        self.topic_filter = f"$share/{share_group}/{topic_filter}" if share_group else topic_filter
        # No persistent session for a shared member: the broker could keep handing a dead member's session its share;
        # without one the live members get everything, and what the dead one never PUBACKed devices send again.
        self.clean = bool(share_group)
        self.handler = handler
        self.max_batch = max_batch
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.pubacked = 0  # PUBACKs sent
        self.withheld = 0  # PUBACKs withheld because the handler could not handle a message durably
        self.errors = 0
        self.failures = 0  # lost connections and failed attempts since the last CONNACK
        self.delays: list[float] = []  # the last reconnect waits drawn (seconds)
        self._rng = rng or random.Random()
        self._context = tls_context(ca) if address.tls else None
        self._stopping = threading.Event()
        self._write = threading.Lock()  # stop() writes DISCONNECT from another thread
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        # Our replies' packet id → (topic, payload), until the broker PUBACKs them.
        self._inflight: dict[int, tuple[bytes, bytes]] = {}
        self._last_id = 0
        # Reader → commit thread: (topic, payload, packet id, arrival, connection); None stops it.
        self._work: queue.SimpleQueue[_Up | None] = queue.SimpleQueue()
        # Commit thread → reader: handled batches, announced by a byte on the wakeup socket.
        self._done: queue.SimpleQueue[tuple[list[_Up], Handled]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._committer: threading.Thread | None = None
        self._conn = 0  # counts connections: a PUBACK goes only to the connection its message came on

    def start(self, timeout: float) -> bool:
        """Connect in the background (retrying by itself); True when subscribed within ``timeout`` seconds."""
        if self._thread is None:
            self._stopping.clear()
            for pending in (self._work, self._done):  # left by a stop(): never PUBACKed, the broker redelivers them
                while not pending.empty():
                    pending.get()
            self._thread = threading.Thread(target=self._run, name="mqtt-up-reader", daemon=True)
            self._committer = threading.Thread(target=self._commit_loop, name="mqtt-up-commit", daemon=True)
            self._committer.start()
            self._thread.start()
        if not self.subscribed.wait(timeout):
            log.warning("up reader: broker %s not reachable yet; retrying in the background", self.address)
            return False
        return True

    def stop(self) -> None:
        """Disconnect; messages not yet handled get no PUBACK (the broker redelivers them to the next session)."""
        self._stopping.set()
        with self._write:
            sock = self._sock
            if sock is not None:
                try:
                    sock.sendall(packets.DISCONNECT)
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's recv at once
                except OSError:
                    pass  # already gone: nothing to say goodbye on
        if self._thread is not None:
            self._thread.join(STOP_JOIN)
            self._thread = None
        if self._committer is not None:
            self._work.put(None)
            self._committer.join(STOP_JOIN)
            self._committer = None

    # --------------------------------------------------------------------------------------------------- connection

    def _run(self) -> None:
        while not self._stopping.is_set():
            rest = b""
            try:
                sock, rest = self._connect()
            except BrokerRefused as exc:
                log.error("broker %s refused the up reader's connection: %s", self.address, exc)
            except (OSError, packets.PacketError) as exc:
                log.debug("up reader: broker %s not reachable: %s", self.address, exc)
            else:
                try:
                    self._serve(sock, rest)
                except (OSError, packets.PacketError) as exc:
                    if not self._stopping.is_set():
                        log.warning("up reader: lost broker %s (%s)", self.address, exc)
                finally:
                    with self._write:
                        self._sock = None
                    sock.close()
                    self.connected.clear()
                    self.subscribed.clear()
            if self._stopping.wait(self._next_delay()):
                return

    def _next_delay(self) -> float:
        self.failures += 1
        delay = backoff_pause(self.failures, RECONNECT_FIRST, RECONNECT_MAX_DELAY, self._rng)
        self.delays = [*self.delays[-(DELAYS_KEPT - 1) :], delay]
        return delay

    def _connect(self) -> tuple[socket.socket, bytes]:
        """A socket past its CONNACK, the un-PUBACKed replies re-sent and the subscription requested; and whatever
        arrived after the CONNACK."""
        address = self.address
        sock = socket.create_connection((address.host, address.port), timeout=CONNECT_TIMEOUT)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a batch's acks leave at once
            if self._context is not None:
                sock = self._context.wrap_socket(sock, server_hostname=address.host)
            hello = packets.connect(
                self.client_id, KEEPALIVE, clean=self.clean, username=address.username, password=address.password
            )
            sock.sendall(hello)
            data = b""
            while True:
                chunk = sock.recv(READ_SIZE)
                if not chunk:
                    raise ConnectionError("the broker closed the connection before its CONNACK")
                data += chunk
                found, _ = packets.split(data)
                if found:
                    break
            first, body = found[0]
            if first >> 4 != packets.CONNACK or len(body) < 2:
                raise packets.PacketError(f"expected a CONNACK, got packet type {first >> 4}")
            if body[1]:
                raise BrokerRefused(packets.CONNACK_REASONS.get(body[1], f"return code {body[1]}"))
            resend = b"".join(packets.publish(t, p, pid, dup=True) for pid, (t, p) in self._inflight.items())
            sock.sendall(resend + packets.subscribe(SUBSCRIBE_ID, [self.topic_filter]))
            sock.settimeout(TICK)
        except BaseException:
            sock.close()
            raise
        with self._write:
            self._sock = sock
        self._conn += 1
        self.failures = 0
        self.connected.set()
        log.info("up reader connected to broker %s", address)
        return sock, data[2 + len(body) :]  # a CONNACK's remaining length is one byte

    def _serve(self, sock: socket.socket, data: bytes) -> None:
        """Read, handle and answer until the connection drops or ``stop()``."""
        last_in = last_out = time.monotonic()
        while not self._stopping.is_set():
            if data:
                found, used = packets.split(data)
                if found:
                    self._dispatch(found, last_in)
                data = data[used:]
            # A TLS socket may hold decrypted bytes select cannot see.
            buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            readable = [sock] if buffered else select.select([sock, self._wake_r], [], [], TICK)[0]
            if self._wake_r in readable or not self._done.empty():
                if self._answer(sock):
                    last_out = time.monotonic()
            chunk: bytes | None = None
            if sock in readable:
                try:
                    chunk = sock.recv(READ_SIZE)
                except (TimeoutError, ssl.SSLWantReadError):
                    pass
            now = time.monotonic()
            if chunk is not None:
                if not chunk:
                    raise ConnectionError("the broker closed the connection")
                data += chunk
                last_in = now
            elif now - last_in > 1.5 * KEEPALIVE:
                raise TimeoutError(f"the broker was silent for {now - last_in:.0f} s")
            if now - last_out >= KEEPALIVE / 2:
                self._send(sock, packets.PINGREQ)
                last_out = now

    def _send(self, sock: socket.socket, data: bytes) -> None:
        with self._write:
            sock.sendall(data)

    # -------------------------------------------------------------------------------------------------------- batches

    def _dispatch(self, found: list[tuple[int, memoryview]], arrived: float) -> None:
        conn = self._conn
        for first, body in found:
            kind = first >> 4
            if kind == packets.PUBLISH:
                topic, pid, payload = packets.parse_publish(first, body)
                self._work.put((str(topic, "utf-8", "replace"), bytes(payload), pid, arrived, conn))
            elif kind == packets.PUBACK:
                self._inflight.pop(packets.packet_id(body), None)
            elif kind == packets.SUBACK:
                self._on_suback(body)

    def _on_suback(self, body: memoryview) -> None:
        if len(body) < 3 or body[2] & 0x80:
            log.error("broker refused the subscription to %s (check the ACL for this gateway)", self.topic_filter)
        self.subscribed.set()
        if self.on_subscribed is not None:
            try:
                self.on_subscribed()
            except Exception:
                log.exception("the up reader's subscription handler failed")

    def _commit_loop(self) -> None:
        """The commit thread: the handler (judge, journal commit, fold) on whatever queued, ``max_batch`` at most."""
        while True:
            first = self._work.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._work.put(None)  # stop once this batch is handled
                    break
                batch.append(item)
            try:
                result = self.handler([(up[0], up[1]) for up in batch])
            except Exception:
                self.errors += 1
                log.exception("handling %d update(s) on %r failed", len(batch), batch[0][0])
                result = Handled([True] * len(batch), [])
            self._done.put((batch, result))
            try:
                self._wake_w.send(b"!")
            except BlockingIOError:
                pass  # the reader has wakeups pending: it drains every handled batch on each

    def _answer(self, sock: socket.socket) -> bool:
        """Write the PUBACKs and replies of every handled batch (True if anything was written)."""
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        out: list[bytes] = []
        waits: list[float] = []
        now = time.monotonic()
        while not self._done.empty():
            batch, result = self._done.get()
            ids = [up[2] for up, ok in zip(batch, result.flags, strict=True) if ok and up[2] and up[4] == self._conn]
            # PUBACKs first: whoever sees a reply, the broker already has the PUBACK of the message it answers.
            out.append(packets.pubacks(ids))
            out.extend(self._reply(topic, payload) for topic, payload in result.replies)
            self.pubacked += len(ids)
            self.withheld += sum(not ok for ok in result.flags)
            waits.extend(now - up[3] for up, ok in zip(batch, result.flags, strict=True) if ok and up[2])
        data = b"".join(out)
        if data:
            self._send(sock, data)
        if waits and self.on_puback is not None:  # after the write: counting never delays an ack
            self.on_puback(waits)
        return bool(data)

    def _reply(self, topic: str, payload: bytes) -> bytes:
        pid = self._last_id
        for _ in range(0xFFFF):
            pid = pid % 0xFFFF + 1
            if pid not in self._inflight:
                break
        else:
            raise packets.PacketError("65,535 replies without a PUBACK from the broker")
        self._last_id = pid
        raw = topic.encode()
        self._inflight[pid] = (raw, payload)
        return packets.publish(raw, payload, pid)


__all__ = ["BatchHandler", "BrokerRefused", "Handled", "MAX_BATCH", "UpReader"]
