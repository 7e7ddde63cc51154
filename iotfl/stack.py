"""The demo's child processes: spawn them, watch them, stop them newest first, and wait for what they serve.

For fault injection (``iotfl.chaos``) a part can be killed (``kill -9``), stopped, frozen (SIGSTOP) and brought
back with the same command line, state and port; while a part is down on purpose ``check_alive`` leaves it be.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from iotfl.broker import Broker, start_broker

BROKER = "broker"  # the broker's name in ``Stack.down``


class StackError(RuntimeError):
    """A part of the demo failed; the message says which and where its log is."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    """The demo's child processes; ``stop()`` ends them newest first. Safe to drive from a chaos thread."""

    workdir: Path
    broker: Broker | None = None
    children: list[Child] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # parts taken down on purpose, not failures
    frozen: set[str] = field(default_factory=set)  # parts stopped with SIGSTOP
    stopping: bool = False  # set by stop(): a late restart from a chaos thread must not leave an orphan
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None, append: bool = False) -> Child:
        log = self.workdir / f"{name}.log"
        with self._lock:  # held across Popen, so stop() cannot miss a child a chaos thread is starting
            if self.stopping:
                raise StackError(f"not starting {name}: the demo is stopping")
            with open(log, "ab" if append else "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "iotfl", *args],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **(env or {})},
                    start_new_session=True,  # Ctrl-C reaches the demo only; it stops the children in order
                )
            child = Child(name, proc, log, list(args), env)
            at = next((i for i, c in enumerate(self.children) if c.name == name), None)
            if at is None:
                self.children.append(child)
            else:  # a restart keeps its place in the stop order
                self.children[at] = child
        return child

    def child(self, name: str) -> Child:
        with self._lock:
            found = next((c for c in self.children if c.name == name), None)
        if found is None:
            raise StackError(f"the demo has no part named {name!r}")
        return found

    def check_alive(self, expected_exit: frozenset[str] = frozenset()) -> None:
        with self._lock:
            children, down, broker = list(self.children), set(self.down), self.broker
        for child in children:
            code = child.proc.poll()
            if child.name in down:
                continue
            if code is not None and not (code == 0 and child.name in expected_exit):
                raise StackError(f"{child.name} exited with code {code}; last lines of {child.log}:\n{child.tail()}")
        if broker is not None and BROKER not in down and broker.proc.poll() is not None:
            raise StackError(f"the broker exited; see {broker.workdir / 'broker.log'}")

    # -- faults (iotfl.chaos) ------------------------------------------------------------------------------------

    def kill(self, name: str) -> int:
        """``kill -9`` a part (no clean shutdown, like a power cut); returns its pid."""
        with self._lock:
            child = self.child(name)
            self.down.add(name)
        child.proc.kill()
        child.proc.wait(10)
        return int(child.proc.pid)

    def terminate(self, name: str, timeout: float = 10.0) -> int:
        """Stop a part cleanly (SIGTERM; SIGKILL after ``timeout``); returns its pid."""
        with self._lock:
            child = self.child(name)
            self.down.add(name)
        child.proc.send_signal(signal.SIGTERM)
        try:
            child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait(5)
        return int(child.proc.pid)

    def restart(self, name: str) -> Child:
        """Start a part again with the same command line and environment (its log continues)."""
        old = self.child(name)
        child = self.spawn(name, old.args, old.env, append=True)
        with self._lock:
            self.down.discard(name)
        return child

    def freeze(self, name: str) -> int:
        """SIGSTOP a part: its sockets stay open and silent, like a dead uplink."""
        child = self.child(name)
        with self._lock:
            self.frozen.add(name)
        child.proc.send_signal(signal.SIGSTOP)
        return int(child.proc.pid)

    def thaw(self, name: str) -> None:
        child = self.child(name)
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGCONT)
        with self._lock:
            self.frozen.discard(name)

    def kill_broker(self) -> int:
        if self.broker is None:
            raise StackError("the demo does not own the broker (--broker URL): it cannot kill it")
        with self._lock:
            self.down.add(BROKER)
        self.broker.kill()
        return int(self.broker.proc.pid)

    def restart_broker(self) -> Broker:
        """The same broker again on the same port and work dir (so the same persistence file)."""
        if self.broker is None:
            raise StackError("the demo does not own the broker")
        old = self.broker
        prefer = "embedded" if old.kind == "amqtt" else "mosquitto"
        with self._lock:
            if self.stopping:
                raise StackError("not restarting the broker: the demo is stopping")
            broker = start_broker(port=old.port, prefer=prefer, workdir=old.workdir, persistent=True)
            self.broker = broker
            self.down.discard(BROKER)
        return broker

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            self.stopping = True
            frozen = list(self.frozen)
        for name in frozen:  # a stopped process would sit on SIGTERM until SIGKILL
            self.thaw(name)
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(5)
        if self.broker is not None:
            self.broker.stop()


def wait_healthy(url: str, stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise StackError(f"the cloud did not answer {url}/healthz within {timeout:.0f} s")


def wait_for_devices(broker_url: str, fleet: str, expected: int, stack: Stack, timeout: float) -> int:
    """Wait until ``expected`` devices have a retained non-offline status on the broker; returns how many do."""
    import paho.mqtt.client as mqtt

    from flcore.endpoints import parse_broker_url
    from flcore.errors import WireError
    from flcore.messages import Status
    from flcore.topics import status_wildcard

    online: set[str] = set()
    lock = threading.Lock()

    def on_message(_client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            status = Status.decode(bytes(msg.payload))
        except WireError:
            return
        with lock:
            (online.discard if status.state == "offline" else online.add)(status.dev)

    address = parse_broker_url(broker_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"iotfl-demo-{secrets.token_hex(4)}")
    if address.username:
        client.username_pw_set(address.username, address.password)
    client.on_connect = lambda c, *_: c.subscribe(status_wildcard(fleet), qos=1)
    client.on_message = on_message
    client.connect(address.host, address.port)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stack.check_alive()
            with lock:
                if len(online) >= expected:
                    break
            time.sleep(0.1)
        with lock:
            return len(online)
    finally:
        client.disconnect()  # first: it wakes paho's thread, so loop_stop returns at once
        client.loop_stop()


def wait_for_exit(stack: Stack, name: str, timeout: float) -> None:
    """Give child ``name`` ``timeout`` seconds to end on its own, then stop it."""
    child = next(c for c in stack.children if c.name == name)
    try:
        child.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        child.proc.send_signal(signal.SIGTERM)
        child.proc.wait(10)
