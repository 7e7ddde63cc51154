"""The demo's child processes: spawn them, watch them, stop them newest first, and wait for what they serve."""

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

from iotfl.broker import Broker


class StackError(RuntimeError):
    """A part of the demo failed; the message says which and where its log is."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Stack:
    """The demo's child processes; ``stop()`` ends them newest first."""

    workdir: Path
    broker: Broker | None = None
    children: list[Child] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "iotfl", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops the children in order
            )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def check_alive(self, expected_exit: frozenset[str] = frozenset()) -> None:
        for child in self.children:
            code = child.proc.poll()
            if code is not None and not (code == 0 and child.name in expected_exit):
                raise StackError(f"{child.name} exited with code {code}; last lines of {child.log}:\n{child.tail()}")
        if self.broker is not None and self.broker.proc.poll() is not None:
            raise StackError(f"the broker exited; see {self.broker.workdir / 'broker.log'}")

    def stop(self, timeout: float = 10.0) -> None:
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
        client.loop_stop()
        client.disconnect()


def wait_for_exit(stack: Stack, name: str, timeout: float) -> None:
    """Give child ``name`` ``timeout`` seconds to end on its own, then stop it."""
    child = next(c for c in stack.children if c.name == name)
    try:
        child.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        child.proc.send_signal(signal.SIGTERM)
        child.proc.wait(10)
