"""One thread that drives the MQTT connections of many simulated devices: a selector loop over paho clients.

A thread per device (paho's ``loop_start``) costs a stack, a wake-up per keepalive and a scheduler slot each: at a
thousand devices the fleet spends its cores switching threads. Here every client is driven from one
``selectors`` loop through paho's external-loop hooks (as aiomqtt does): ``on_socket_open`` / ``on_socket_close``
(un)register a socket for reading, ``on_socket_register_write`` says a packet is queued, and the loop calls
``loop_read`` / ``loop_write`` / ``loop_misc``. The same loop runs the fleet's timers (ack timeouts, delayed sends,
reconnect waits), so a timer costs a heap entry instead of a thread.

Threads: paho callbacks (``on_connect``, ``on_message``, …) and timer callbacks run on the loop thread and must be
quick. ``publish``/``subscribe``/``disconnect`` may be called from any thread: paho queues the packet and calls the
write hook, which wakes the loop; only the loop thread writes to a socket, connects or touches the selector.

Reconnects keep ``Backoff``'s full jitter, and the backoff starts over only after a connection stayed up
``stable_after`` seconds: two clients that share a client id take the connection from each other at once, and a
backoff that reset on every CONNACK would let them do so forever (a *kick loop*).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import paho.mqtt.client as mqtt

from device_sim.connection import Backoff, cut
from flcore.endpoints import BrokerAddress

log = logging.getLogger(__name__)

# Seconds between two keepalive checks (``loop_misc``) of every client; keepalives are >= 5 s.
TICK = 0.5
# A connection that lasted this long was no kick by a client with the same id: the reconnect backoff starts over.
STABLE_SECONDS = 10.0


class TimerHandle:
    """A callback scheduled on the loop; ``cancel()`` is safe from any thread and idempotent."""

    __slots__ = ("args", "cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[..., Any], args: tuple[Any, ...]):
        self.when, self.fn, self.args = when, fn, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def due(self) -> bool:
        """Its time has come (it ran, runs now or is about to)."""
        return time.monotonic() >= self.when


class Link:
    """One client's state on the loop: its socket, reconnect backoff and lifecycle flags (loop thread only)."""

    def __init__(self, client: mqtt.Client, address: BrokerAddress, keepalive: int, backoff: Backoff, name: str):
        self.client, self.address, self.keepalive, self.backoff, self.name = client, address, keepalive, backoff, name
        self.sock: socket.socket | None = None  # registered with the selector
        self.up_since: float | None = None
        self.retry: TimerHandle | None = None  # a scheduled reconnect
        self.closing = False
        self.gone = threading.Event()  # set once the loop dropped the link (closed, halted or given up)


class NetLoop:
    """A selector loop on its own daemon thread, for any number of paho clients and timers."""

    def __init__(self, name: str = "iotfl-net", stable_after: float = STABLE_SECONDS):
        self.name = name
        self.stable_after = stable_after
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()  # guards the timer heap, the job queue and the write wishes
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._order = itertools.count()
        self._jobs: list[Callable[[], None]] = []
        self._want_write: set[Link] = set()
        self._links: set[Link] = set()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- any thread --------------------------------------------------------------------------------------------

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``fn(*args)`` on the loop thread after ``delay`` seconds."""
        handle = TimerHandle(time.monotonic() + max(delay, 0.0), fn, args)
        with self._lock:
            heapq.heappush(self._timers, (handle.when, next(self._order), handle))
        self._wake()
        return handle

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on the loop thread, in the order of the calls."""
        with self._lock:
            self._jobs.append(fn)
        self._wake()

    def in_loop(self) -> bool:
        return threading.current_thread() is self._thread

    def add(self, client: mqtt.Client, address: BrokerAddress, keepalive: int, retries: int, backoff: Backoff,
            name: str, timeout: float) -> Link:  # fmt: skip
        """Connect ``client`` from the loop (``1 + retries`` attempts, jittered waits, bounded by ``timeout``) and keep
        it connected from then on; raises ConnectionError when no attempt succeeded."""
        link = Link(client, address, keepalive, backoff, name)
        client.on_socket_open = lambda _c, _u, sock: self._opened(link, sock)
        client.on_socket_close = lambda _c, _u, sock: self._closed(link, sock)
        client.on_socket_register_write = lambda _c, _u, _sock: self._wants_write(link)
        client.on_socket_unregister_write = None  # write interest follows want_write() after each loop_write
        first: Future[None] = Future()
        self.call_soon(lambda: self._first_connect(link, retries, first, 0.1))
        try:
            first.result(timeout)
        except TimeoutError:
            if not first.cancel():  # connected just now after all
                return link
            self.halt(link, wait=False)
            raise ConnectionError(
                f"cannot connect to the MQTT broker at {address.host}:{address.port} within {timeout:.0f} s"
            ) from None
        return link

    def halt(self, link: Link, wait: bool = True) -> None:
        """Stop driving ``link`` without touching its connection (the device "loses power"): no reads, writes,
        pings or reconnects any more, and the socket stays open; ``wait`` waits until the loop let go of it."""
        self.call_soon(lambda: self._drop(link))
        if wait and not self.in_loop():
            link.gone.wait(5.0)

    def close(self, link: Link, timeout: float) -> None:
        """After ``client.disconnect()``: let the loop write what is queued (the DISCONNECT), then drop the link."""

        def closing() -> None:
            link.closing = True
            if link.sock is None:  # between two attempts: nothing to send the DISCONNECT on
                self._drop(link)

        self.call_soon(closing)
        if not self.in_loop():
            link.gone.wait(timeout)
        self.halt(link)

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop thread; the clients' sockets are left as they are."""
        self._halt.set()
        self._wake()
        if not self.in_loop():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the loop will wake anyway) or closed (the loop is gone)

    def _wants_write(self, link: Link) -> None:
        """paho queued a packet (any thread): the loop writes it on its next turn."""
        with self._lock:
            self._want_write.add(link)
        self._wake()

    # -- loop thread ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic() + TICK
        while not self._halt.is_set():
            now = time.monotonic()
            with self._lock:
                timeout = min(next_tick, self._timers[0][0] if self._timers else next_tick) - now
            for key, events in self._selector.select(max(timeout, 0.0)):
                if key.data is None:
                    self._drain_wake()
                    continue
                link: Link = key.data
                if events & selectors.EVENT_READ:
                    self._service(link, functools.partial(_read, link))
                if events & selectors.EVENT_WRITE and link.sock is not None:
                    self._service(link, link.client.loop_write)
            self._run_jobs()
            self._flush_writes()
            self._run_timers()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK
                for link in list(self._links):
                    if link.sock is not None:
                        self._service(link, link.client.loop_misc)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _run_jobs(self) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, []
        for job in jobs:
            try:
                job()
            except Exception:
                log.exception("%s: a job on the network loop failed", self.name)

    def _flush_writes(self) -> None:
        with self._lock:
            links, self._want_write = self._want_write, set()
        for link in links:
            if link.sock is not None:
                self._service(link, link.client.loop_write)

    def _run_timers(self) -> None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._timers or self._timers[0][0] > now:
                    return
                _, _, handle = heapq.heappop(self._timers)
            if handle.cancelled:
                continue
            try:
                handle.fn(*handle.args)
            except Exception:
                log.exception("%s: a timer callback failed", self.name)

    def _service(self, link: Link, step: Callable[[], mqtt.MQTTErrorCode]) -> None:
        """One paho step for ``link``; a failure starts the reconnect (or ends a closing link)."""
        try:
            rc = step()
        except Exception:  # a callback that raised: paho's state is unknown, so start the connection over
            log.exception("%s: network step failed; reconnecting", link.name)
            self._unregister(link)
            cut(link.client, close=True)
            rc = mqtt.MQTT_ERR_UNKNOWN
        if link not in self._links:
            return  # halted meanwhile (a callback of this step dropped the link)
        if link.up_since is None and link.client.is_connected():
            link.up_since = time.monotonic()
        if rc == mqtt.MQTT_ERR_SUCCESS and link.sock is not None:
            self._set_write_interest(link)
            return
        if link.closing:
            self._drop(link)  # the DISCONNECT went out (or the connection died meanwhile)
            return
        if link.up_since is not None and time.monotonic() - link.up_since >= self.stable_after:
            link.backoff.reset()
        link.up_since = None
        self._schedule_reconnect(link, f"connection lost ({mqtt.error_string(rc)})")

    def _set_write_interest(self, link: Link) -> None:
        assert link.sock is not None
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if link.client.want_write() else 0)
        if self._selector.get_key(link.sock).events != want:
            self._selector.modify(link.sock, want, link)

    def _first_connect(self, link: Link, retries: int, first: Future[None], delay: float) -> None:
        if first.done():
            return  # the caller gave up waiting
        try:
            link.client.connect(link.address.host, link.address.port, link.keepalive)
        except OSError as exc:
            if retries <= 0 or first.done():
                first.set_exception(
                    ConnectionError(
                        f"cannot connect to the MQTT broker at {link.address.host}:{link.address.port}: "
                        f"{exc.strerror or exc}"
                    )
                )
                return
            log.debug("%s: connect attempt failed (%s); %d retries left", link.name, exc, retries)
            jittered = delay * (1 + random.random())
            self.call_later(jittered, self._first_connect, link, retries - 1, first, min(delay * 2, 2.0))
            return
        except Exception as exc:  # e.g. a bad TLS setup: no retry helps
            first.set_exception(exc)
            return
        self._links.add(link)
        first.set_result(None)

    def _schedule_reconnect(self, link: Link, why: str) -> None:
        if link.retry is not None and not link.retry.cancelled:
            return  # one wait at a time
        delay = link.backoff.next()
        log.debug("%s: %s; next attempt in %.2f s (attempt %d)", link.name, why, delay, link.backoff.attempts)
        link.retry = self.call_later(delay, self._reconnect, link)

    def _reconnect(self, link: Link) -> None:
        link.retry = None
        if link not in self._links:
            return
        if link.closing:
            self._drop(link)
            return
        try:
            link.client.reconnect()
        except (OSError, ValueError) as exc:
            self._schedule_reconnect(link, f"reconnect failed ({exc})")

    def _opened(self, link: Link, sock: Any) -> None:
        if not self.in_loop():  # paho opens sockets only in connect()/reconnect(), which run on the loop
            raise RuntimeError(f"{link.name}: a socket was opened outside the network loop")
        self._unregister(link)
        link.sock = sock
        self._selector.register(sock, selectors.EVENT_READ, link)  # the CONNECT's write hook adds EVENT_WRITE

    def _closed(self, link: Link, sock: Any) -> None:
        if link.sock is sock:
            self._unregister(link)

    def _unregister(self, link: Link) -> None:
        if link.sock is not None:
            try:
                self._selector.unregister(link.sock)
            except (KeyError, ValueError):
                pass  # closed under us (``cut``): epoll forgot it with the descriptor
            link.sock = None

    def _drop(self, link: Link) -> None:
        """Let go of ``link`` for good: nothing of the loop touches its client again."""
        self._unregister(link)
        if link.retry is not None:
            link.retry.cancel()
            link.retry = None
        self._links.discard(link)
        with self._lock:
            self._want_write.discard(link)
        link.gone.set()


def _read(link: Link) -> mqtt.MQTTErrorCode:
    """Read what arrived; a TLS socket may hold decrypted bytes that select() cannot see, so drain those too."""
    rc = link.client.loop_read()
    sock = link.sock
    while rc == mqtt.MQTT_ERR_SUCCESS and isinstance(sock, ssl.SSLSocket) and link.sock is sock and sock.pending():
        rc = link.client.loop_read()
    return rc


__all__ = ["STABLE_SECONDS", "TICK", "Link", "NetLoop", "TimerHandle"]
