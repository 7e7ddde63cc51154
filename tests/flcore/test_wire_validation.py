"""Receivers validate everything: each of the contract's reason codes, with round/seq carried when readable."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest

from flcore.errors import REASONS, WireError
from flcore.messages import MAX_UPDATE_BYTES, Ack, Agg, Status, Task, Up

P = 10
CHUNK = 4


def valid_up(**changes: Any) -> dict[str, Any]:
    """A valid ``up`` map for a model of P=10 parameters (3 chunks of 4), round 3, seq 9."""
    obj: dict[str, Any] = {
        "v": 1,
        "t": "up",
        "dev": "d0001",
        "round": 3,
        "base": 2,
        "n": 40,
        "loss": 0.5,
        "seq": 9,
        "chunk": CHUNK,
        "scales": np.array([0.01, 0.02, 0.0], dtype="<f4").tobytes(),
        "q": bytes(range(P)),
    }
    obj.update(changes)
    return obj


def without(key: str) -> dict[str, Any]:
    obj = valid_up()
    del obj[key]
    return obj


def decode_up(obj: Any, **kwargs: Any) -> Up:
    data = obj if isinstance(obj, bytes) else msgpack.packb(obj, use_bin_type=True)
    return Up.decode(data, params=P, topic_dev="d0001", **kwargs)


def reject(obj: Any, reason: str, round: int | None = 3, seq: int | None = 9, **kwargs: Any) -> WireError:
    with pytest.raises(WireError) as info:
        decode_up(obj, **kwargs)
    err = info.value
    assert (err.reason, err.round, err.seq) == (reason, round, seq), str(err)
    return err


def f32(*values: float) -> bytes:
    return np.array(values, dtype="<f4").tobytes()


def test_valid_up_decodes() -> None:
    up = decode_up(valid_up())
    assert up.q.tolist() == list(range(P)) and up.scales.tolist()[2] == 0.0


def test_unknown_keys_are_ignored() -> None:
    obj = valid_up(future={"x": [1, 2]}, zz=b"\x00", meta={"battery": 0.3, "solar": True, "extra": [1]})
    up = decode_up(obj)
    assert up.meta is not None and up.meta["battery"] == 0.3


@pytest.mark.parametrize(
    "data", [b"", b"\xc1", b"\x92\x01", b"\x81\xa1v", b"\xde\xff\xff", b"not msgpack at all \xff"], ids=repr
)
def test_decode_undecodable_bytes_have_nil_ids(data: bytes) -> None:
    reject(data, "decode", None, None)


@pytest.mark.parametrize("obj", [[1, 2], 5, "up", None, b"\x00"], ids=repr)
def test_decode_not_a_map(obj: Any) -> None:
    reject(obj, "decode", None, None)


def test_decode_non_string_keys() -> None:
    reject(msgpack.packb({1: 2, "v": 1}), "decode", None, None)


@pytest.mark.parametrize("v", [2, 0, "1", 1.0, True, None])
def test_version(v: Any) -> None:
    reject(valid_up(v=v), "version")


def test_version_missing() -> None:
    reject(without("v"), "version")


@pytest.mark.parametrize("t", ["task", "UP", None, 1])
def test_schema_wrong_type_tag(t: Any) -> None:
    reject(valid_up(t=t), "schema")


@pytest.mark.parametrize("key", ["t", "dev", "base", "n", "loss", "chunk", "scales", "q"])
def test_schema_missing_field(key: str) -> None:
    err = reject(without(key), "schema")
    assert key in str(err)


def test_schema_missing_round_or_seq_carries_nil() -> None:
    reject(without("round"), "schema", round=None)
    reject(without("seq"), "schema", seq=None)


@pytest.mark.parametrize(
    "key,value",
    [
        ("dev", 1),
        ("dev", b"d0001"),
        ("base", "2"),
        ("n", 40.0),
        ("n", "40"),
        ("loss", "0.5"),
        ("loss", None),
        ("chunk", 4.0),
        ("scales", [0.01, 0.02, 0.0]),
        ("scales", "abc"),
        ("q", list(range(P))),
        ("q", "q" * P),
        ("sub", "1"),
        ("sub", -1),
        ("base", -1),
    ],
)
def test_schema_wrong_type(key: str, value: Any) -> None:
    reject(valid_up(**{key: value}), "schema")


@pytest.mark.parametrize("key", ["n", "base", "chunk", "sub"])
@pytest.mark.parametrize("value", [True, False])
def test_schema_bool_is_not_an_int(key: str, value: bool) -> None:
    reject(valid_up(**{key: value}), "schema")


def test_schema_bool_round_and_seq_are_unreadable() -> None:
    reject(valid_up(round=True), "schema", round=None)
    reject(valid_up(seq=False), "schema", seq=None)
    reject(valid_up(loss=True), "schema")


def test_unreadable_round_still_carries_seq() -> None:
    reject(valid_up(round="3"), "schema", round=None, seq=9)
    reject(valid_up(seq=1.5), "schema", round=3, seq=None)


def test_round_must_be_positive() -> None:
    reject(valid_up(round=0), "schema", round=0)


@pytest.mark.parametrize("chunk", [0, -4, 65537])
def test_schema_chunk_range(chunk: int) -> None:
    reject(valid_up(chunk=chunk), "schema")


@pytest.mark.parametrize("dev", ["d0002", "a/b", "+", "#", "x" * 65, ""])
def test_dev_mismatch(dev: str) -> None:
    reject(valid_up(dev=dev), "dev_mismatch")


def test_dev_invalid_without_topic_dev() -> None:
    with pytest.raises(WireError) as info:
        Up.decode(msgpack.packb(valid_up(dev="a+b")), params=P)
    assert info.value.reason == "dev_mismatch"


@pytest.mark.parametrize("n", [0, -1, 100_001])
def test_n_range(n: int) -> None:
    reject(valid_up(n=n), "n_range")


def test_n_range_custom_max_samples() -> None:
    decode_up(valid_up(n=100_000))
    reject(valid_up(n=41), "n_range", max_samples=40)
    decode_up(valid_up(n=40), max_samples=40)


@pytest.mark.parametrize("q", [bytes(P - 1), bytes(P + 1), b""])
def test_length_q(q: bytes) -> None:
    reject(valid_up(q=q), "length")


@pytest.mark.parametrize("scales", [f32(0.1, 0.1), f32(0.1, 0.1, 0.1, 0.1), f32(0.1, 0.1, 0.1)[:-1], b""])
def test_length_scales(scales: bytes) -> None:
    reject(valid_up(scales=scales), "length")


def test_length_scales_follows_chunk() -> None:
    decode_up(valid_up(chunk=5, scales=f32(0.1, 0.1)))
    decode_up(valid_up(chunk=10, scales=f32(0.1)))
    decode_up(valid_up(chunk=65536, scales=f32(0.1)))
    reject(valid_up(chunk=5, scales=f32(0.1, 0.1, 0.1)), "length")


@pytest.mark.parametrize("bad", [-0.01, float("nan"), float("inf"), float("-inf")])
def test_scale_negative_or_non_finite(bad: float) -> None:
    reject(valid_up(scales=f32(0.01, bad, 0.0)), "scale")


def test_scale_negative_zero_is_fine() -> None:
    decode_up(valid_up(scales=f32(0.01, -0.0, 0.0)))


@pytest.mark.parametrize("loss", [float("nan"), float("inf"), float("-inf")])
def test_loss_non_finite(loss: float) -> None:
    reject(valid_up(loss=loss), "loss")


@pytest.mark.parametrize(
    "meta",
    [
        [1, 2],
        "battery",
        0.5,
        {"battery": "full"},
        {"battery": True},
        {"battery": 1.5},
        {"battery": -0.1},
        {"battery": float("nan")},
        {"train_ms": 1.5},
        {"train_ms": "10"},
        {"train_ms": True},
        {"ram_class": 2},
        {"fw": 1.0},
        {"fw": None, "ram_class": b"c"},
    ],
    ids=repr,
)
def test_schema_meta_wrong_types(meta: Any) -> None:
    reject(valid_up(meta=meta), "schema")


def test_meta_integer_battery_and_unknown_keys_ok() -> None:
    up = decode_up(valid_up(meta={"battery": 1, "train_ms": 5, "ram_class": "class1", "fw": "0.1", "x": None}))
    assert up.meta == {"battery": 1, "train_ms": 5, "ram_class": "class1", "fw": "0.1", "x": None}


def test_too_large_checked_before_parsing() -> None:
    reject(b"\xc1" * 101, "too_large", None, None, max_bytes=100)  # garbage, but the size check comes first
    data = msgpack.packb(valid_up(junk=b"\x00" * MAX_UPDATE_BYTES))
    reject(data, "too_large", None, None)
    decode_up(msgpack.packb(valid_up()), max_bytes=len(msgpack.packb(valid_up())))


def test_checks_apply_in_contract_order() -> None:
    reject(valid_up(v=2, t="task"), "version")
    reject(valid_up(t="task", dev="other"), "schema")
    reject(valid_up(dev="other", n=0), "dev_mismatch")
    reject(valid_up(n=0, chunk=0), "n_range")
    reject(valid_up(q=b"", scales=f32(float("nan"))), "length")
    reject(valid_up(scales=f32(-1, 0, 0), loss=float("nan")), "scale")
    reject(valid_up(loss=float("nan"), meta={"battery": "full"}), "loss")


def test_every_reason_code_is_in_the_contract_list() -> None:
    contract = {"decode", "version", "schema", "dev_mismatch", "n_range", "length", "scale", "loss", "too_large"}
    # signature: docs/protocol.md, "Signed updates"; enc: "Encodings"
    assert REASONS == contract | {"signature", "enc"}
    with pytest.raises(ValueError, match="unknown reason"):
        WireError("nope")


def test_other_messages_validate() -> None:
    def fails(cls: Any, obj: dict[str, Any], reason: str, **kwargs: Any) -> None:
        with pytest.raises(WireError) as info:
            cls.decode(msgpack.packb(obj, use_bin_type=True), **kwargs)
        assert info.value.reason == reason, str(info.value)

    task = {
        "v": 1,
        "t": "task",
        "round": 1,
        "base": 0,
        "layers": [2, 2],
        "w": f32(*[0.0] * 6),
        "lr": 0.1,
        "epochs": 1,
        "batch": 8,
        "chunk": 4,
        "deadline": 10.0,
        "min_battery": 0.1,
    }
    Task.decode(msgpack.packb(task))
    fails(Task, {**task, "layers": [2, 0]}, "schema")
    fails(Task, {**task, "w": f32(0.0)}, "length")
    fails(Task, {**task, "w": f32(*[float("nan")] * 6)}, "schema")
    fails(Task, {**task, "select": 1.5}, "schema")
    fails(Task, {**task, "select": ["ok", "no/pe"]}, "schema")
    fails(Task, {**task, "t": "up"}, "schema")

    fails(Ack, {"v": 1, "t": "ack", "round": 1, "seq": 1, "status": "maybe", "reason": ""}, "schema")
    fails(Ack, {"v": 1, "t": "ack", "round": "1", "seq": 1, "status": "late", "reason": ""}, "schema")
    fails(Ack, {"v": 1, "t": "ack", "round": 1, "seq": 1, "status": "late"}, "schema")

    agg = {"v": 1, "t": "agg", "gw": "gw0", "round": 1, "base": 0, "n": 5, "k": 1, "sum": f32(0, 0, 0), "loss": 1.0}
    Agg.decode(msgpack.packb(agg), params=3)
    fails(Agg, {**agg, "gw": "g/w"}, "schema")
    fails(Agg, {**agg, "n": 0}, "schema")
    fails(Agg, {**agg, "sum": f32(0, 0)}, "length", params=3)
    fails(Agg, {**agg, "sum": b"\x00" * 5}, "length")
    fails(Agg, {**agg, "sum": f32(0, float("inf"), 0)}, "scale")
    fails(Agg, {**agg, "loss": float("nan")}, "loss")
    fails(Agg, {**agg, "devs": ["d1", 2]}, "schema")

    fails(Status, {"v": 1, "t": "status", "dev": "d/1", "state": "online"}, "schema")
    fails(Status, {"v": 1, "t": "status", "dev": "d1", "state": "gone"}, "schema")
    fails(Status, {"v": 1, "t": "status", "dev": "d1", "state": "online", "battery": float("nan")}, "schema")
    fails(Status, {"v": 1, "t": "status", "dev": "d1", "state": "online", "rssi": "low"}, "schema")
