"""Real parts for the fault tests (tests/integration/test_faults_*.py): the cloud in this process on a fixed port and
database (stop it, start it again), the gateway as a ``python -m iotfl gateway`` child process (so it can be
``kill -9``-ed), and devices that are plain paho clients keeping their update until acked and recording every ack.

Counting: device ``i`` trains on ``n = 2**i`` samples, so the cloud's per-gateway ``n`` names exactly which devices
were counted, and its ``k`` says how often — one update per device and round means k == number of devices counted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cloud.server import running
from cloud.settings import CloudSettings
from flcore.datasets import Dataset
from flcore.endpoints import parse_broker_url
from flcore.messages import Ack, Status, Task, Up
from flcore.quantize import quantize
from flcore.topics import GatewayTopics, status_topic

TOKEN = "gw0-fault-token"
GW = "gw0"
REPO = Path(__file__).resolve().parents[2]
RESEND_AFTER = 1.0  # a device re-sends (same seq) when no ack came within this many seconds
WAIT = 30.0


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what} not met within {timeout:.0f} s")


class Cloud:
    """The real cloud (uvicorn in a thread, SQLite) on ``port``; ``stop()`` and ``start()`` keep port and database."""

    def __init__(self, tmp_path: Path, dataset: Dataset, port: int, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "db": f"sqlite:///{tmp_path / 'cloud.db'}",
            "port": port,
            "gateway_tokens": {GW: TOKEN},
            "dataset": dataset.name,
            "rounds": 1,
            "round_timeout": 60.0,
            "chunk": 16,
            "min_gateways": 1,
        }
        values.update(overrides)
        self.settings = CloudSettings(**values)
        self.dataset = dataset
        self.url = f"http://127.0.0.1:{port}"
        self._stack: contextlib.ExitStack | None = None

    def start(self) -> None:
        stack = contextlib.ExitStack()
        stack.enter_context(running(self.settings, self.dataset))
        self._stack = stack

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def round(self, r: int) -> dict[str, Any] | None:
        try:
            response = httpx.get(f"{self.url}/api/v1/rounds/{r}", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def closed_round(self, r: int, timeout: float = WAIT) -> dict[str, Any]:
        def closed() -> dict[str, Any] | None:
            info = self.round(r)
            return info if info is not None and info["state"] == "closed" else None

        return wait_for(closed, timeout, f"round {r} closed at the cloud")


class GatewayProcess:
    """``python -m iotfl gateway`` as a child; each start logs to its own file; ``kill()`` is ``kill -9``."""

    def __init__(self, tmp_path: Path, broker_url: str, cloud_url: str, *, quorum: int, round_timeout: float = 60):
        self.dir = tmp_path / "gateway"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = [sys.executable, "-m", "iotfl", "gateway", "--id", GW, "--broker", broker_url, "--cloud",
                     cloud_url, "--quorum", str(quorum), "--round-timeout", str(round_timeout),
                     "--state-dir", str(self.dir)]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.dir / f"gateway-{self.starts}.log"

    def start(self, pause_at: str = "") -> None:
        self.starts += 1
        env = {**os.environ, "IOTFL_TOKEN": TOKEN, "IOTFL_POLL_INTERVAL": "0.1", "IOTFL_PAUSE_AT": pause_at}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, needle: str, timeout: float = WAIT) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            return needle in self.text()

        wait_for(seen, timeout, f"gateway log line {needle!r}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Device:
    """A device that answers each new task up to round ``allowed`` and re-sends that update until an ack comes."""

    def __init__(self, broker_url: str, index: int, chunk: int = 16) -> None:
        self.dev = f"d{index:02d}"
        self.n = 1 << index
        self.chunk = chunk
        self.topics = GatewayTopics("default", GW)
        self.allowed = 0  # the test raises it to let the device answer the task of that round
        self.acks: list[Ack] = []
        self.sends = 0
        self._task: Task | None = None
        self._pending: tuple[int, int, bytes] | None = None  # (round, seq, payload) until acked
        self._answered = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        address = parse_broker_url(broker_url)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"fault-{self.dev}")
        self.client.reconnect_delay_set(0.1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect_async(address.host, address.port, keepalive=10)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name=f"device-{self.dev}", daemon=True)
        self._thread.start()

    def statuses(self, r: int) -> set[str]:
        with self._lock:
            return {a.status for a in self.acks if a.round == r}

    def counted(self, r: int) -> bool:
        """The gateway said this device's round-``r`` update is in (``accepted``, or ``duplicate`` of one that is)."""
        return bool(self.statuses(r) & {"accepted", "duplicate"})

    def task_round(self) -> int:
        task = self._task
        return task.round if task is not None else 0

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            return
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([(self.topics.task, 1), (self.topics.ack(self.dev), 1)])
        status = Status(self.dev, "online", gw=GW)
        client.publish(status_topic("default", self.dev), status.encode(), qos=1, retain=True)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.topics.task:
            self._task = Task.decode(msg.payload)
            return
        ack = Ack.decode(msg.payload)
        with self._lock:
            self.acks.append(ack)
            pending = self._pending
            if pending is not None and (ack.round, ack.seq) == pending[:2] and ack.status in ("accepted", "duplicate"):
                self._pending = None

    def _run(self) -> None:
        last_sent = 0.0
        while not self._closed.wait(0.05):
            task = self._task
            with self._lock:
                if task is not None and not task.done and self._answered < task.round <= self.allowed:
                    self._answered = task.round
                    self._pending = (task.round, 100 * task.round, self._update(task))
                    last_sent = 0.0
                pending = self._pending
            if pending is not None and time.monotonic() - last_sent >= RESEND_AFTER:
                last_sent = time.monotonic()
                self.sends += 1
                self.client.publish(f"{self.topics.prefix}/up/{self.dev}", pending[2], qos=1)

    def _update(self, task: Task) -> bytes:
        rng = np.random.default_rng([sum(self.dev.encode()), task.round])
        scales, q = quantize(rng.normal(0, 0.05, task.w.size).astype(np.float32), self.chunk)
        return Up(self.dev, task.round, task.base, self.n, 0.3, 100 * task.round, self.chunk, scales, q).encode()


def check_counts(cloud: Cloud, r: int, fleet: list[Device]) -> dict[str, int]:
    """0 lost, 0 double: the cloud's k/n for the gateway match the devices the gateway acked, each exactly once."""
    info = cloud.closed_round(r)
    share = info["gateways"][GW]
    acked = [d for d in fleet if d.counted(r)]
    assert share["n"] == sum(d.n for d in acked), f"round {r}: n={share['n']} but acked devices sum to " + str(
        sum(d.n for d in acked)
    )
    assert share["k"] == len(acked), f"round {r}: k={share['k']} for {len(acked)} acked devices"
    return {"k": share["k"], "n": share["n"], "acked": len(acked)}
