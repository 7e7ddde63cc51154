"""Property tests: no input makes a decoder raise anything but WireError (and valid input always decodes)."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flcore.errors import REASONS, WireError
from flcore.messages import Ack, Agg, Status, Task, Up
from flcore.model import ModelSpec
from flcore.quantize import quantize

# database=None: no .hypothesis folder left in the work tree; the examples are cheap, so many of them
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
P = 23

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=120),
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=6,
)


def valid_up_map(p: int = P, chunk: int = 5) -> dict[str, Any]:
    delta = np.linspace(-0.3, 0.7, p, dtype=np.float32)
    scales, q = quantize(delta, chunk)
    return msgpack.unpackb(Up("d0001", 3, 2, 40, 0.5, 9, chunk, scales, q, sub=1, meta={"battery": 0.4}).encode())


def decode_all(data: bytes) -> None:
    """Every decoder either returns or raises WireError with a contract reason code."""
    for decode in (
        lambda d: Up.decode(d, params=P, topic_dev="d0001"),
        lambda d: Up.decode(d),
        Task.decode,
        Ack.decode,
        lambda d: Agg.decode(d, params=P),
        Status.decode,
    ):
        try:
            decode(data)
        except WireError as err:
            assert err.reason in REASONS
            assert err.round is None or (isinstance(err.round, int) and not isinstance(err.round, bool))
            assert err.seq is None or (isinstance(err.seq, int) and not isinstance(err.seq, bool))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_wire_error(data: bytes) -> None:
    decode_all(data)


@FUZZ
@given(st.data())
def test_mutated_up_bytes_only_raise_wire_error(data: st.DataObject) -> None:
    raw = bytearray(msgpack.packb(valid_up_map(), use_bin_type=True))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and raw:
            del raw[pos]
        elif op == "truncate":
            del raw[pos:]
    decode_all(bytes(raw))


@FUZZ
@given(
    st.data(),
    st.sampled_from(["v", "t", "dev", "round", "base", "n", "loss", "seq", "chunk", "scales", "q", "sub", "meta"]),
)
def test_mutated_up_fields_only_raise_wire_error(data: st.DataObject, key: str) -> None:
    obj = valid_up_map()
    action = data.draw(st.sampled_from(["replace", "drop", "add", "meta"]))
    if action == "replace":
        obj[key] = data.draw(values)
    elif action == "drop":
        obj.pop(key, None)
    elif action == "add":
        obj[data.draw(st.text(max_size=6))] = data.draw(values)
    else:
        obj["meta"] = data.draw(
            st.dictionaries(st.sampled_from(["battery", "train_ms", "ram_class", "fw", "x"]), values, max_size=4)
        )
    decode_all(msgpack.packb(obj, use_bin_type=True))


@FUZZ
@given(
    p=st.integers(1, 300),
    chunk=st.integers(1, 400),
    n=st.integers(1, 100_000),
    loss=st.floats(allow_nan=False, allow_infinity=False),
    scale=st.floats(1e-30, 1e30),
    seed=st.integers(0, 2**32 - 1),
)
def test_valid_up_always_round_trips(p: int, chunk: int, n: int, loss: float, scale: float, seed: int) -> None:
    delta = (np.random.default_rng(seed).normal(size=p) * scale).astype(np.float32)
    if not np.all(np.isfinite(delta)):
        return
    scales, q = quantize(delta, chunk)
    up = Up("dev_A-9", 1, 0, n, loss, 0, chunk, scales, q)
    back = Up.decode(up.encode(), params=p, topic_dev="dev_A-9")
    assert back.n == n and back.loss == loss
    np.testing.assert_array_equal(back.q, q)
    np.testing.assert_array_equal(back.scales, scales)


@FUZZ
@given(layers=st.lists(st.integers(1, 12), min_size=2, max_size=4), seed=st.integers(0, 1000))
def test_valid_task_always_round_trips(layers: list[int], seed: int) -> None:
    spec = ModelSpec(tuple(layers))
    task = Task(2, 1, spec.layers, spec.init(seed), 0.01, 1, 4, 8, 1e9, 0.3)
    back = Task.decode(task.encode())
    assert back.layers == spec.layers
    np.testing.assert_array_equal(back.w, task.w)
