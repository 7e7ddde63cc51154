"""The hostile inputs of benchmarks/fuzz_wire.py: valid messages of every kind and the hypothesis strategies that
mutate them (random bytes, msgpack structures shaped like a message, byte- and field-level mutations, depth bombs,
huge declared lengths). Shared with tests/flcore/test_wire_fuzz.py and tests/gateway/test_collector_fuzz.py through
``fuzz_wire.inputs``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
from hypothesis import strategies as st

from flcore.messages import MAX_SAMPLES, Ack, Agg, Status, Task, Up
from flcore.model import ModelSpec
from flcore.quantize import quantize
from flcore.signing import sign
from flcore.topics import GatewayTopics

P = 23  # parameters of the model the fuzzed up/agg messages are checked against
CHUNK = 5
DEV = "d0001"
TOPICS = GatewayTopics("default", "gw0")
ROUND, SUB, BASE = 3, 1, 2

# ----------------------------------------------------------------------------------------------------------- values

EDGE_NUMBERS = [
    0,
    -1,
    1,
    2**31,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    MAX_SAMPLES,
    MAX_SAMPLES + 1,
    65_536,
    65_537,
    2**31 - 1,
    0.0,
    -0.0,
    0.5,
    1.5,
    -1e-300,
    1e38,
    3.4e38,
    1e300,
    -1e300,
    1.7976931348623157e308,
    math.nan,
    math.inf,
    -math.inf,
]
wire_ints = st.integers(-(2**63), 2**64 - 1)  # what msgpack can carry
EDGE_FLOATS = [0.0, -0.0, 1e-45, 1e24, 1.1e24, 1e30, 3.4e38, -1.0, math.nan, math.inf, -math.inf]
edge_values: st.SearchStrategy[Any] = st.sampled_from(
    [*EDGE_NUMBERS, True, False, None, "", "x" * 70, "d0002", b"", b"\0" * 3, [], {}]
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    wire_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=32),
    st.text(max_size=8),
    st.binary(max_size=96),
    edge_values,
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=6,
)


def _of_type(value: Any) -> st.SearchStrategy[Any]:
    """Values of a *different* wire type than ``value`` (int ↔ float ↔ str ↔ bin ↔ bool ↔ nil ↔ array ↔ map)."""
    swaps: dict[type, st.SearchStrategy[Any]] = {
        bool: st.integers(0, 1) | st.none(),
        int: st.floats() | st.booleans() | st.text(max_size=3) | st.binary(max_size=8),
        float: wire_ints | st.text(max_size=3) | st.none(),
        str: st.binary(max_size=8) | wire_ints | st.lists(st.text(max_size=3), max_size=2),
        bytes: st.text(max_size=8) | st.lists(st.integers(-128, 255), max_size=8) | st.none(),
        list: st.dictionaries(st.text(max_size=3), wire_ints, max_size=2) | st.binary(max_size=8),
        dict: st.lists(wire_ints, max_size=3) | st.text(max_size=3) | st.none(),
    }
    return swaps.get(type(value), values)


# ----------------------------------------------------------------------------------------------------------- targets

# ----------------------------------------------------------------------------------------------------------- valid


def valid_up(p: int = P, chunk: int = CHUNK) -> Up:
    scales, q = quantize(np.linspace(-0.3, 0.7, p, dtype=np.float32), chunk)
    return Up(DEV, ROUND, BASE, 40, 0.5, 9, chunk, scales, q, sub=SUB, meta={"battery": 0.4, "fw": "1.0"})


def _valid_task() -> Task:
    spec = ModelSpec((3, 4, 2))
    return Task(ROUND, BASE, spec.layers, spec.init(0), 0.05, 1, 8, 16, 1.7e9, 0.2, select=[DEV, "d0002"], sub=1)


def _valid_agg() -> Agg:
    return Agg("gw0", ROUND, BASE, 80, 2, np.linspace(-1, 1, P, dtype=np.float32), 0.7, 1234, (DEV, "d0002"))


KEYS = {DEV: bytes(range(32)), "d0002": bytes(range(1, 33))}

VALID: dict[str, Callable[[], bytes]] = {
    "up": lambda: valid_up().encode(),
    "up-signed": lambda: valid_up().encode(key=KEYS[DEV]),
    "task": lambda: _valid_task().encode(),
    "ack": lambda: Ack(ROUND, 9, "rejected", "n_range").encode(),
    "agg": lambda: _valid_agg().encode(),
    "status": lambda: Status(DEV, "online", 0.8, -60, "S", "1.0", "gw0", ROUND, 0, "battery").encode(),
}


# -------------------------------------------------------------------------------------------------------- strategies


def _raw_map(pairs: list[tuple[Any, bytes]]) -> bytes:
    """A msgpack map from keys and already-encoded values (so a key can repeat and a value can be any bytes)."""
    header = msgpack.Packer().pack_map_header(len(pairs))
    return header + b"".join(msgpack.packb(k, use_bin_type=True) + v for k, v in pairs)


def _pairs(obj: dict[str, Any]) -> list[tuple[Any, bytes]]:
    return [(k, msgpack.packb(v, use_bin_type=True)) for k, v in obj.items()]


HUGE_HEADERS = [
    b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
    b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
    b"\xdd\xff\xff\xff\xff",  # array32 of 4 G items
    b"\xdf\xff\xff\xff\xff",  # map32 of 4 G pairs
    b"\xc5\xff\xff",  # bin16 of 64 KiB
    b"\xde\x01\x00",  # map16 of 256 pairs
    b"\xc9\xff\xff\xff\xff\x01",  # ext32 of 4 GiB
]


@st.composite
def depth_bomb(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([100, 1_000, 5_000, 100_000]))
    unit = draw(st.sampled_from([b"\x91", b"\x81\xa1a", b"\xdc\x00\x01"]))
    return unit * depth + b"\xc0"


@st.composite
def byte_mutation(draw: st.DrawFn, kind: str) -> bytes:
    """A valid message of ``kind`` with 1–3 byte-level edits."""
    raw = bytearray(VALID[kind]())
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "extend", "huge", "bomb"]))
        pos = draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and raw:
            raw[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            del raw[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del raw[pos:]
        elif op == "extend":
            raw += draw(st.binary(min_size=1, max_size=64))
        elif op == "huge":
            raw[pos:pos] = draw(st.sampled_from(HUGE_HEADERS))
        elif op == "bomb":
            raw[pos:pos] = draw(depth_bomb())
    return bytes(raw)


@st.composite
def field_mutation(draw: st.DrawFn, kind: str) -> bytes:
    """A valid message of ``kind`` with 1–4 field-level edits, re-encoded (possibly with a repeated key)."""
    obj: dict[str, Any] = msgpack.unpackb(VALID[kind](), raw=False)
    signed = obj.pop("sig", None) is not None
    keys = sorted(obj)
    tail: list[tuple[Any, bytes]] = []
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(keys))
        ops = ["edge", "random", "swap", "drop", "dup", "add", "floats", "resize", "bomb", "nested"]
        op = draw(st.sampled_from(ops))
        if op == "edge":
            obj[key] = draw(edge_values)
        elif op == "random":
            obj[key] = draw(values)
        elif op == "swap":
            obj[key] = draw(_of_type(obj.get(key)))
        elif op == "drop":
            obj.pop(key, None)
        elif op == "dup":
            tail.append((key, msgpack.packb(draw(values), use_bin_type=True)))
        elif op == "add":
            extra = draw(st.text(max_size=6) | st.binary(max_size=4) | st.sampled_from(["sig", "meta", "x"]))
            obj[extra] = draw(values)  # type: ignore[index]
        elif op == "floats" and isinstance(obj.get(key), bytes):
            size = len(obj[key])
            floats = draw(st.lists(st.floats(width=32) | st.sampled_from(EDGE_FLOATS), min_size=1, max_size=8))
            obj[key] = np.resize(np.asarray(floats, dtype="<f4"), size // 4).tobytes() + obj[key][size // 4 * 4 :]
        elif op == "resize" and isinstance(obj.get(key), bytes):
            data = obj[key]
            size = draw(st.sampled_from([0, 1, len(data) - 1, len(data) + 1, len(data) + 4, 2 * len(data)]))
            obj[key] = (data * 3)[: max(size, 0)] if size <= 3 * len(data) else data + b"\0" * size
        elif op == "bomb":
            tail.append((key, draw(depth_bomb())))
        elif op == "nested":
            obj[key] = {
                "battery": draw(values),
                "train_ms": draw(values),
                "ram_class": draw(values),
                "fw": draw(values),
            }
    raw = _raw_map(_pairs(obj) + tail)
    if signed and draw(st.booleans()):
        # Signed again after the edits, so the edited fields reach the checks behind the signature.
        dev = obj.get("dev")
        return sign(raw, KEYS.get(dev, KEYS[DEV]) if isinstance(dev, str) else KEYS[DEV])
    return raw


@st.composite
def shaped_map(draw: st.DrawFn, kind: str) -> bytes:
    """A map with the right ``v`` and ``t`` (so it gets past the header checks) and random values for its keys."""
    valid = msgpack.unpackb(VALID[kind](), raw=False)
    keys, t = sorted(valid), valid["t"]
    obj = {key: draw(values) for key in draw(st.lists(st.sampled_from(keys), max_size=len(keys), unique=True))}
    obj.update(v=draw(st.sampled_from([1, 1, 1, 0, 2, 1.0, True])), t=draw(st.sampled_from([t, t, "up", ""])))
    return msgpack.packb(obj, use_bin_type=True)


def payloads(kind: str) -> st.SearchStrategy[bytes]:
    """Every kind of hostile payload for a receiver of ``kind`` messages."""
    return st.one_of(
        st.binary(max_size=400),
        values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
        shaped_map(kind),
        byte_mutation(kind),
        byte_mutation(kind),
        field_mutation(kind),
        field_mutation(kind),
        field_mutation(kind),
        depth_bomb(),
    )


topics = st.one_of(
    st.just(TOPICS.up(DEV)),
    st.just(TOPICS.up(DEV)),
    st.just(TOPICS.up(DEV)),
    st.sampled_from([TOPICS.up("d0002"), TOPICS.up("x" * 64), "iotfl/default/gw/gw1/up/d0001", TOPICS.prefix + "/up/"]),
    st.text(max_size=60),
)
