"""Personalization on the wire: the task's ``personal``, the update's ``meta.pacc``/``meta.gacc`` and the
aggregate's ``pers``: round trips, absence (old peers), and refusals."""

from __future__ import annotations

import time
from typing import Any

import msgpack
import numpy as np
import pytest

from flcore.errors import WireError
from flcore.messages import Agg, Task, Up
from flcore.messages.up import _decode_common
from flcore.model import ModelSpec
from flcore.personal import Pers
from flcore.quantize import quantize

SPEC = ModelSpec((4, 3, 2))
META = {"battery": 0.5, "train_ms": 12, "ram_class": "constrained", "fw": "sim"}


def _task(**kw: Any) -> Task:
    return Task(2, 1, SPEC.layers, SPEC.init(0), 0.1, 2, 8, 64, time.time() + 30, 0.1, **kw)


def _repacked(data: bytes, **fields: Any) -> bytes:
    obj = msgpack.unpackb(data, raw=False)
    obj.update(fields)
    return msgpack.packb(obj, use_bin_type=True)


def test_task_personal_round_trip_and_absent_is_zero() -> None:
    assert Task.decode(_task(personal=5).encode()).personal == 5
    plain = _task().encode()
    assert b"personal" not in plain and Task.decode(plain).personal == 0


@pytest.mark.parametrize("bad", [-1, 1001, 2.5, "3", True])
def test_task_refuses_a_bad_personal(bad: Any) -> None:
    with pytest.raises(WireError):
        Task.decode(_repacked(_task().encode(), personal=bad))


def _up(meta: dict[str, Any] | None) -> Up:
    scales, q = quantize(np.linspace(-1, 1, SPEC.param_count).astype(np.float32), 64)
    return Up("d1", 2, 1, 10, 0.5, 3, 64, scales, q, meta=meta)


def test_up_accuracies_round_trip_through_the_checked_path() -> None:
    data = _up({**META, "pacc": 0.75, "gacc": 0.5}).encode()
    obj = msgpack.unpackb(data, raw=False)
    assert _decode_common(obj, data, SPEC.param_count, "d1", 1000) is None  # not the fast path's case
    up = Up.decode(data, params=SPEC.param_count, topic_dev="d1")
    assert (up.meta or {})["pacc"] == 0.75 and (up.meta or {})["gacc"] == 0.5
    whole = Up.decode(_up({**META, "pacc": 1, "gacc": 0}).encode())  # integers 0 and 1 are fractions too
    assert (whole.meta or {})["pacc"] == 1


def test_up_without_accuracies_keeps_the_fast_path() -> None:
    data = _up(META).encode()
    assert _decode_common(msgpack.unpackb(data, raw=False), data, SPEC.param_count, "d1", 1000) is not None


@pytest.mark.parametrize(
    "extra",
    [
        {"pacc": 1.2, "gacc": 0.5},
        {"pacc": 0.5, "gacc": -0.1},
        {"pacc": float("nan"), "gacc": 0.5},
        {"pacc": "0.5", "gacc": 0.5},
        {"pacc": True, "gacc": 0.5},
        {"pacc": 0.5},
        {"gacc": 0.5},
    ],
)
def test_up_refuses_bad_accuracies(extra: dict[str, Any]) -> None:
    with pytest.raises(WireError) as exc:
        Up.decode(_up({**META, **extra}).encode())
    assert exc.value.reason == "schema"


def _agg(pers: Pers | None, k: int = 3) -> Agg:
    return Agg("gw0", 2, 1, 30, k, np.zeros(SPEC.param_count, dtype=np.float32), 0.4, 100, ("a", "b"), pers)


def test_agg_pers_round_trip_and_absent_for_old_peers() -> None:
    got = Agg.decode(_agg(Pers(2.25, 1.5, 3)).encode(), params=SPEC.param_count)
    assert got.pers == Pers(2.25, 1.5, 3)
    plain = _agg(None).encode()
    assert b"pers" not in plain and Agg.decode(plain).pers is None


@pytest.mark.parametrize(
    "pers",
    [
        {"p": 3.5, "g": 1.0, "c": 3},  # more than c devices at accuracy 1
        {"p": 1.0, "g": -0.5, "c": 3},
        {"p": 1.0, "g": 1.0, "c": 4},  # more devices than k updates
        {"p": 1.0, "g": 1.0, "c": -1},
        {"p": 1.0, "g": 1.0, "c": 2.0},
        {"p": "1", "g": 1.0, "c": 2},
        {"p": 1.0, "g": 1.0},
        [1.0, 1.0, 2],
    ],
)
def test_agg_refuses_bad_pers(pers: Any) -> None:
    with pytest.raises(WireError) as exc:
        Agg.decode(_repacked(_agg(None).encode(), pers=pers))
    assert exc.value.reason == "schema"
