"""Start an MQTT broker on 127.0.0.1 for the demo and the tests: mosquitto when installed, else amqtt."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from device_sim.usage import raise_fd_limit

# Connections a local broker is sized for: the largest simulated fleet (10,000 devices) plus gateways and tools.
BROKER_CONNECTIONS = 10_100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:``port``; raise on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def mosquitto_config(port: int, persistence_dir: Path | None = None) -> str:
    """A local broker config: one loopback listener, anonymous access (local use only), generous queues."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        # A round pushes one QoS1 message per device through each gateway's session at once.
        "max_queued_messages 100000",
        "max_inflight_messages 100",
        "message_size_limit 1048576",
        # No cap on clients (mosquitto's default, stated): a simulated fleet opens one connection per device. The
        # descriptors they need come from the open-files limit, which start_broker raises for the child.
        "max_connections -1",
        # Without it every small ack waits ~40 ms for Nagle's algorithm on loopback.
        "set_tcp_nodelay true",
        # $SYS/broker/publish/messages/dropped every second: gateways log it per round, tests compare it.
        "sys_interval 1",
        "log_type error",
        "log_type warning",
    ]
    if persistence_dir is not None:
        # Saved every second so a test's kill -9 loses little; production uses 10 s (deploy/mosquitto.conf).
        lines += ["persistence true", f"persistence_location {persistence_dir}/", "autosave_interval 1"]
    else:
        lines.append("persistence false")
    return "\n".join(lines) + "\n"


@dataclass
class Broker:
    """A broker child process; ``stop()`` ends it, ``kill()`` ends it without a clean shutdown."""

    kind: str
    port: int
    proc: subprocess.Popen
    workdir: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


def start_configured(conf: Path, port: int, workdir: Path, timeout: float = 10.0) -> Broker:
    """Start mosquitto with an operator's config (e.g. one ``iotfl provision fleet`` wrote) for a test or a trial:
    persistence goes under ``workdir`` and the broker keeps running as the current user, so it can read key files
    that only this user may read. ``port`` is the config's listener port (to wait for)."""
    exe = mosquitto_path()
    if exe is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"persistence_location {workdir}/" if line.startswith("persistence_location ") else line
        for line in conf.read_text().splitlines()
    ]
    local = workdir / "mosquitto.conf"
    local.write_text("\n".join([*lines, f"user {getpass.getuser()}"]) + "\n")
    raise_fd_limit(BROKER_CONNECTIONS)  # inherited by the child
    log = open(workdir / "broker.log", "ab")
    proc = subprocess.Popen([exe, "-c", str(local)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return _started("mosquitto", port, proc, workdir, timeout)


def start_broker(
    port: int | None = None,
    prefer: str = "auto",
    workdir: Path | None = None,
    persistent: bool = False,
    timeout: float = 10.0,
) -> Broker:
    """Start mosquitto (``prefer`` "auto" or "mosquitto") or the embedded amqtt broker ("embedded")."""
    port = port or free_port()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="iotfl-broker-"))
    workdir.mkdir(parents=True, exist_ok=True)
    exe = mosquitto_path() if prefer in ("auto", "mosquitto") else None
    if prefer == "mosquitto" and exe is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    raise_fd_limit(BROKER_CONNECTIONS)  # inherited by the child
    log = open(workdir / "broker.log", "ab")
    if exe is not None:
        conf = workdir / "mosquitto.conf"
        conf.write_text(mosquitto_config(port, workdir if persistent else None))
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        kind = "mosquitto"
    else:
        cmd = [sys.executable, "-m", "iotfl.embedded_broker", "--port", str(port)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        kind = "amqtt"
    log.close()
    return _started(kind, port, proc, workdir, timeout)


def _started(kind: str, port: int, proc: subprocess.Popen[bytes], workdir: Path, timeout: float) -> Broker:
    """The broker once ``proc`` listens on ``port``; killed and a clear error when it does not in time."""
    try:
        wait_for_port(port, timeout, proc)
    except Exception:
        if proc.poll() is None:
            proc.kill()
        raise RuntimeError(f"{kind} did not start on port {port}; see {workdir / 'broker.log'}") from None
    return Broker(kind, port, proc, workdir)
