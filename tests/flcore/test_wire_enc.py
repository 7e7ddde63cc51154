"""The ``enc`` of ``up`` and ``task`` on the wire: exact bytes, round trips, and every rejection with its reason."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest

from flcore.encodings import ENCODINGS, F32, INT4, INT8, TOPK, encode
from flcore.errors import WireError
from flcore.messages import Task, Up
from flcore.model import ModelSpec
from flcore.quantize import quantize
from flcore.signing import SIG_TAIL, TAIL_BYTES, verify

P = 11
DELTA = np.linspace(-0.5, 0.4, P, dtype=np.float32)


def make(enc: str, **changes: Any) -> Up:
    body, _ = encode(DELTA, enc, 4, 0.3)
    return Up.of(body, "d0001", 3, 2, 40, 0.5, 9, **changes)


def fields(enc: str) -> dict[str, Any]:
    return msgpack.unpackb(make(enc).encode())


def reject(obj: dict[str, Any], reason: str, params: int | None = P) -> None:
    with pytest.raises(WireError) as info:
        Up.decode(msgpack.packb(obj, use_bin_type=True), params=params, topic_dev="d0001")
    assert (info.value.reason, info.value.round, info.value.seq) == (reason, 3, 9), str(info.value)


def test_int8_bytes_are_the_v1_up() -> None:
    scales, q = quantize(DELTA, 4)
    assert make(INT8).encode() == Up("d0001", 3, 2, 40, 0.5, 9, 4, scales, q).encode()
    assert "enc" not in fields(INT8) and "p" not in fields(INT8)


def test_int4_and_topk_wire_fields() -> None:
    int4 = fields(INT4)
    assert (int4["enc"], int4["p"], len(int4["q"]), len(int4["scales"])) == ("int4", P, 6, 12)
    assert "idx" not in int4
    topk = fields(TOPK)  # k = ceil(0.3 · 11) = 4: |-0.5|, |-0.41|, |0.4|, |-0.32|
    assert (topk["enc"], topk["p"], len(topk["q"]), len(topk["scales"])) == ("topk", P, 4, 4)
    assert np.frombuffer(topk["idx"], dtype="<u4").tolist() == [0, 1, 2, 10]
    f32 = fields(F32)
    assert (f32["enc"], f32["scales"], f32["q"]) == ("f32", b"", DELTA.astype("<f4").tobytes())
    assert "p" not in f32


@pytest.mark.parametrize("enc", ENCODINGS)
@pytest.mark.parametrize("params", [P, None])
def test_every_encoding_round_trips(enc: str, params: int | None) -> None:
    up = make(enc, sub=1, meta={"battery": 0.5})
    back = Up.decode(up.encode(), params=params, topic_dev="d0001")
    assert (back.enc, back.sub, back.meta, back.chunk) == (enc, 1, {"battery": 0.5}, 4)
    np.testing.assert_array_equal(back.delta(), up.delta())
    assert back.delta().shape == (P,) and back.encode() == up.encode()


@pytest.mark.parametrize("enc", ENCODINGS)
def test_signed_updates_keep_enc_before_sig(enc: str) -> None:
    key = bytes(range(32))
    data = make(enc).encode(key=key)
    assert data[-TAIL_BYTES:].startswith(SIG_TAIL) and list(msgpack.unpackb(data))[-1] == "sig"
    verify(data, key)
    back = Up.decode(data, params=P, topic_dev="d0001")
    assert back.enc == enc and back.encode() == data


@pytest.mark.parametrize(
    ("enc", "change", "reason"),
    [
        (INT8, {"enc": "int2"}, "enc"),
        (INT8, {"enc": 4}, "schema"),
        (INT8, {"enc": ""}, "enc"),
        (INT4, {"p": None}, "schema"),
        (INT4, {"p": 0}, "schema"),
        (INT4, {"p": P + 1}, "length"),
        (INT4, {"q": bytes(5)}, "length"),
        (INT4, {"q": bytes([0x08]) + bytes(5)}, "schema"),
        (INT4, {"q": bytes(5) + b"\x10"}, "schema"),
        (INT4, {"scales": bytes(8)}, "length"),
        (TOPK, {"idx": None}, "schema"),
        (TOPK, {"idx": np.array([0, 0, 1, 2], dtype="<u4").tobytes()}, "schema"),
        (TOPK, {"idx": np.array([0, 1, 2, 11], dtype="<u4").tobytes()}, "schema"),
        (TOPK, {"idx": bytes(3)}, "length"),
        (TOPK, {"q": bytes(5)}, "length"),
        (TOPK, {"scales": bytes(8)}, "length"),
        (TOPK, {"scales": np.array([np.inf], dtype="<f4").tobytes()}, "scale"),
        (F32, {"q": bytes(4 * P - 1)}, "length"),
        (F32, {"scales": bytes(4)}, "length"),
        (F32, {"q": np.full(P, np.nan, dtype="<f4").tobytes()}, "scale"),
        (F32, {"q": np.full(P, 1e38, dtype="<f4").tobytes()}, "scale"),
    ],
)
def test_bad_encodings_are_rejected_with_a_reason(enc: str, change: dict[str, Any], reason: str) -> None:
    obj = fields(enc)
    for key, value in change.items():
        if value is None:
            del obj[key]
        else:
            obj[key] = value
    reject(obj, reason)


def test_task_names_an_encoding_and_ignores_an_unknown_one() -> None:
    spec = ModelSpec((3, 2))
    task = Task(1, 0, spec.layers, spec.init(0), 0.1, 1, 8, 4, 1e9, 0.1, enc=TOPK, topk=0.05)
    data = task.encode()
    assert list(msgpack.unpackb(data))[-2:] == ["enc", "topk"]
    back = Task.decode(data)
    assert (back.enc, back.topk) == (TOPK, 0.05)
    plain = Task(1, 0, spec.layers, spec.init(0), 0.1, 1, 8, 4, 1e9, 0.1)
    assert "enc" not in msgpack.unpackb(plain.encode())
    obj = msgpack.unpackb(data)
    obj["enc"] = "int2"  # a newer gateway's encoding: ignored, the device keeps its own
    assert Task.decode(msgpack.packb(obj, use_bin_type=True)).enc is None
    for bad in ({"enc": 3}, {"topk": 0.0}, {"topk": 1.5}):
        with pytest.raises(WireError) as info:
            Task.decode(msgpack.packb({**obj, **bad}, use_bin_type=True))
        assert info.value.reason == "schema"
