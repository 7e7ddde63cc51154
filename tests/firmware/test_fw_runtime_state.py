"""The firmware's decisions and memory across resets, under the real MicroPython against a real mosquitto: a skipped
task is announced in the retained status, deep sleep lasts until the task's deadline, seq and model version survive
every reset, ``done`` stops training, and a bad config.json is one clear line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fw_device import Device, Observer, device_config, write_samples
from micropython_runner import MicroPythonRunner

from flcore.datasets import sensors
from flcore.endpoints import parse_broker_url
from flcore.messages import Status, Task, Up
from flcore.model import ModelSpec
from gateway.node import GatewayNode
from iotfl.broker import Broker

LAYERS = (10, 16, 5)
TASK = "iotfl/default/gw/gw0/task"
UP = "iotfl/default/gw/gw0/up/fw0"
STATUS = "iotfl/default/dev/fw0/status"


def make_device(runner: MicroPythonRunner, broker: Broker, folder: Path, board: dict | None = None, **cfg) -> Device:
    data = sensors(0, samples=200)
    dev = Device(runner, folder, heap="128K")
    dev.flash()
    write_samples(folder, data.x_train[:24], data.y_train[:24])
    dev.configure(device_config("fw0", broker.port, **cfg), board)
    return dev


def task(rnd: int = 1, base: int = 0, layers: tuple[int, ...] = LAYERS, deadline_in: float = 20.0, **kw) -> Task:
    fields = dict(min_battery=0.1, select=None, done=False)
    fields.update(kw)
    spec = ModelSpec(layers)
    return Task(rnd, base, layers, spec.init(rnd), 0.05, 1, 8, 64, time.time() + deadline_in, **fields)


@pytest.fixture
def observer(mosquitto: Broker):
    obs = Observer(mosquitto.port, [STATUS, UP])
    yield obs
    obs.close()


@pytest.mark.parametrize(
    ("reason", "board", "cfg", "task_fields", "state"),
    [
        ("battery", {"battery": 0.3}, {}, {"min_battery": 0.5}, "sleeping"),
        ("select", {}, {}, {"select": ["d0001", "d0002"]}, "online"),
        ("ram", {}, {"ram_class": "class1"}, {"layers": (64, 32, 10)}, "online"),
    ],
)
def test_a_declined_task_is_announced_and_the_board_sleeps_until_its_deadline(
    mpy_unix: MicroPythonRunner,
    mosquitto: Broker,
    observer: Observer,
    tmp_path: Path,
    reason: str,
    board: dict,
    cfg: dict,
    task_fields: dict,
    state: str,
) -> None:
    announced = task(deadline_in=20, **task_fields)
    observer.publish(TASK, announced.encode(), retain=True)
    dev = make_device(mpy_unix, mosquitto, tmp_path / "fw0", board, **cfg)
    started = time.time()
    boots = dev.wake(30)
    ended = time.time()
    assert boots[-1].sleep_ms is not None, "\n".join(map(str, boots))
    observer.last_status(STATUS, state="sleeping")
    statuses = [Status.decode(p) for p in observer.on(STATUS)]
    declined = [s for s in statuses if s.skip is not None]
    assert declined and (declined[0].round, declined[0].sub, declined[0].skip, declined[0].state) == (1, 0, reason,
                                                                                                     state)  # fmt: skip
    assert statuses[-1].state == "sleeping" and statuses[-1].skip == reason  # the retained one still names it
    assert (
        statuses[0].gw == "gw0"
        and statuses[0].fw == "0.1.0"
        and statuses[0].ram_class == cfg.get("ram_class", "class2")
    )
    assert observer.on(UP) == []
    # deep sleep until the task's deadline plus the config's 500 ms margin, as the board's clock saw it
    assert (
        (announced.deadline - ended) * 1000 + 450 <= boots[-1].sleep_ms <= (announced.deadline - started) * 1000 + 550
    )
    assert dev.state()["last"] == [1, 0] and dev.state()["seq"] == 0


def test_seq_and_model_version_survive_resets_across_rounds(
    mpy_unix: MicroPythonRunner, mosquitto: Broker, observer: Observer, tmp_path: Path
) -> None:
    node = GatewayNode("gw0", parse_broker_url(mosquitto.url))
    dev = make_device(mpy_unix, mosquitto, tmp_path / "fw0")
    try:
        node.open_sub_round(task(1, 0))
        assert node.start(10)
        first = dev.wake(30)
        assert dev.state()["last"] == [1, 0], "\n".join(map(str, first))
        node.close_sub_round()
        node.open_sub_round(task(2, 1))  # the next round trains from version 1
        second = dev.wake(30)  # a new interpreter on the same flash: nothing lives in RAM across it
        assert dev.state()["last"] == [2, 0], "\n".join(map(str, second))
    finally:
        node.stop()
    ups = [Up.decode(p) for p in observer.on(UP)]
    assert [(u.round, u.base, u.seq) for u in ups] == [(1, 0, 1), (2, 1, 2)]
    state = dev.state()
    assert (state["seq"], state["version"], state["pending"]) == (2, 1, None)
    assert ups[1].meta == {"battery": 1.0, "train_ms": ups[1].meta["train_ms"], "ram_class": "class2", "fw": "0.1.0"}


def test_done_stops_training(
    mpy_unix: MicroPythonRunner, mosquitto: Broker, observer: Observer, tmp_path: Path
) -> None:
    observer.publish(TASK, task(3, 3, done=True).encode(), retain=True)
    dev = make_device(mpy_unix, mosquitto, tmp_path / "fw0", sleep={"done_ms": 3_600_000})
    boots = dev.wake(30)
    assert boots[-1].sleep_ms == 3_600_000 and "training finished: final model version 3" in boots[-1].stdout
    assert dev.state()["done"] is True and dev.state()["version"] == 3
    assert observer.on(UP) == [] and observer.last_status(STATUS, state="sleeping").state == "sleeping"


def test_a_bad_config_is_one_line_and_a_long_sleep(mpy_unix: MicroPythonRunner, tmp_path: Path) -> None:
    dev = Device(mpy_unix, tmp_path / "fw0", heap="64K")
    dev.flash()
    cases = [
        ({"gw": "gw0", "broker": {"host": "h"}}, "dev must match [A-Za-z0-9_-]{1,64}, got None"),
        ({"dev": "d1", "gw": "gw 0", "broker": {"host": "h"}}, "gw must match"),
        ({"dev": "d1", "gw": "gw0"}, "broker.host is required"),
        ({"dev": "d1", "gw": "gw0", "broker": {"host": "h"}, "ram_class": "big"}, "ram_class must be one of"),
        ({"dev": "d1", "gw": "gw0", "broker": {"host": "h", "tls": True}}, "broker.ca"),
        ({"dev": "d1", "gw": "gw0", "broker": {"host": "h"}, "ota": {"key": "short"}}, "ota.key must be"),
        ({"dev": "d1", "gw": "gw0", "broker": {"host": "h"}, "battery": {"source": "adc"}}, "battery.pin"),
    ]
    for raw, message in cases:
        (dev.folder / "config.json").write_text(json.dumps(raw))
        boot = dev.boot(20)
        lines = [line for line in boot.stdout.splitlines() if line.startswith("iotfl: config:")]
        assert len(lines) == 1 and message in lines[0], boot
        assert boot.sleep_ms == 600_000 and "Traceback" not in boot.stdout + boot.stderr
    (dev.folder / "config.json").unlink()
    boot = dev.boot(20)
    assert "config.json not found: provision the board with `iotfl provision device`" in boot.stdout
