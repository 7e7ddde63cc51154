"""encode() → decode() round trips of every wire message, and what the encoded maps hold."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from flcore.messages import Ack, Agg, Status, Task, Up
from flcore.model import ModelSpec
from flcore.quantize import quantize


def make_up(**changes: object) -> Up:
    delta = np.linspace(-1.0, 1.0, 17, dtype=np.float32)
    scales, q = quantize(delta, 5)
    fields = dict(dev="d0001", round=3, base=2, n=40, loss=0.75, seq=9, chunk=5, scales=scales, q=q)
    fields.update(changes)
    return Up(**fields)  # type: ignore[arg-type]


def test_up_round_trip_all_fields() -> None:
    meta = {"battery": 0.5, "train_ms": 1200, "ram_class": "class2", "fw": "1.0.0"}
    up = make_up(sub=2, meta=meta)
    back = Up.decode(up.encode(), params=17, topic_dev="d0001")
    assert (back.dev, back.round, back.base, back.n, back.loss, back.seq, back.chunk, back.sub) == (
        "d0001",
        3,
        2,
        40,
        0.75,
        9,
        5,
        2,
    )
    assert back.meta == meta
    np.testing.assert_array_equal(back.scales, up.scales)
    np.testing.assert_array_equal(back.q, up.q)
    assert back.scales.dtype == np.float32 and back.q.dtype == np.int8
    np.testing.assert_array_equal(back.delta(), up.delta())


def test_up_optional_fields_omitted_when_default() -> None:
    obj = msgpack.unpackb(make_up().encode())
    assert list(obj) == ["v", "t", "dev", "round", "base", "n", "loss", "seq", "chunk", "scales", "q"]
    assert obj["v"] == 1 and obj["t"] == "up"
    assert isinstance(obj["scales"], bytes) and len(obj["scales"]) == 4 * 4 and len(obj["q"]) == 17
    back = Up.decode(make_up().encode())
    assert back.sub == 0 and back.meta is None


def test_up_without_params_takes_p_from_q() -> None:
    assert Up.decode(make_up().encode()).q.size == 17


def test_up_integer_loss_accepted_as_float() -> None:
    back = Up.decode(make_up(loss=2).encode())
    assert back.loss == 2.0 and isinstance(back.loss, float)


def test_task_round_trip() -> None:
    spec = ModelSpec((4, 3, 2))
    w = spec.init(1)
    task = Task(
        round=5,
        base=4,
        layers=spec.layers,
        w=w,
        lr=0.05,
        epochs=2,
        batch=16,
        chunk=64,
        deadline=1_700_000_000.5,
        min_battery=0.2,
        select=["d0001", "d0002"],
        sub=1,
        done=False,
    )
    back = Task.decode(task.encode())
    assert (back.round, back.base, back.layers, back.lr, back.epochs, back.batch, back.chunk) == (
        5,
        4,
        (4, 3, 2),
        0.05,
        2,
        16,
        64,
    )
    assert (back.deadline, back.min_battery, back.select, back.sub, back.done) == (
        1_700_000_000.5,
        0.2,
        ["d0001", "d0002"],
        1,
        False,
    )
    np.testing.assert_array_equal(back.w, w)
    assert back.spec == spec


def test_task_done_and_fraction_select() -> None:
    spec = ModelSpec((2, 2))
    task = Task(7, 7, spec.layers, spec.init(0), 0.1, 1, 8, 32, 0.0, 0.0, select=0.25, done=True)
    obj = msgpack.unpackb(task.encode())
    assert obj["done"] is True and "sub" not in obj
    back = Task.decode(task.encode())
    assert back.done is True and back.select == 0.25


def test_ack_round_trip_including_nil_ids() -> None:
    for ack in (Ack(3, 9, "accepted"), Ack(None, None, "rejected", "decode"), Ack(2, 0, "late", "")):
        assert Ack.decode(ack.encode()) == ack
    obj = msgpack.unpackb(Ack(None, None, "rejected", "decode").encode())
    assert obj == {"v": 1, "t": "ack", "round": None, "seq": None, "status": "rejected", "reason": "decode"}


def test_ack_rejects_unknown_status_on_construction() -> None:
    with pytest.raises(ValueError, match="ack status"):
        Ack(1, 1, "maybe")


def test_agg_round_trip() -> None:
    total = np.arange(17, dtype=np.float32) * 0.5
    agg = Agg("gw0", 4, 3, 120, 3, total, 0.4, bytes_up=900, devices=("d0001", "d0002", "d0003"))
    back = Agg.decode(agg.encode(), params=17)
    assert (back.gw, back.round, back.base, back.n, back.k, back.loss, back.bytes_up, back.devices) == (
        "gw0",
        4,
        3,
        120,
        3,
        0.4,
        900,
        ("d0001", "d0002", "d0003"),
    )
    np.testing.assert_array_equal(back.sum, total)


def test_agg_without_extensions_decodes_with_defaults() -> None:
    raw = {
        "v": 1,
        "t": "agg",
        "gw": "gw1",
        "round": 1,
        "base": 0,
        "n": 5,
        "k": 1,
        "sum": np.zeros(3, dtype="<f4").tobytes(),
        "loss": 1.0,
    }
    back = Agg.decode(msgpack.packb(raw), params=3)
    assert back.bytes_up == 0 and back.devices == ()


def test_status_round_trip_with_extensions_and_extra_keys() -> None:
    status = Status(
        "d0007",
        "online",
        battery=0.8,
        rssi=-60,
        ram_class="class2",
        fw="1.2",
        gw="gw1",
        round=4,
        sub=0,
        skip="battery",
        extra={"zeta": 1, "alpha": "x"},
    )
    back = Status.decode(status.encode())
    assert back == status
    keys = list(msgpack.unpackb(status.encode()))
    assert keys[-2:] == ["alpha", "zeta"]  # extra keys are written sorted, after the known ones


def test_status_last_will_minimal() -> None:
    will = Status("d0007", "offline")
    assert msgpack.unpackb(will.encode()) == {"v": 1, "t": "status", "dev": "d0007", "state": "offline"}
    assert Status.decode(will.encode()) == will


def test_status_rejects_unknown_state_on_construction() -> None:
    with pytest.raises(ValueError, match="state"):
        Status("d0001", "asleep")
