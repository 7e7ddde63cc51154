"""flcore reproduces the stored byte-exact wire vectors (tests/flcore/vectors/*.json, see make_vectors.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flcore.errors import WireError
from flcore.messages import Ack, Status, Task, Up
from flcore.quantize import quantize

VECTORS = Path(__file__).parent / "vectors"


def load(name: str) -> list[dict[str, Any]]:
    doc = json.loads((VECTORS / name).read_text())
    assert doc["wire_version"] == 1
    return doc["vectors"]


def f32(hex_bytes: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hex_bytes), dtype="<f4").astype(np.float32)


def by_name(name: str) -> Any:
    return pytest.mark.parametrize("vec", load(name), ids=lambda v: v["name"])


def test_vector_files_cover_varied_shapes() -> None:
    ups = load("up.json")
    assert len(ups) >= 5
    assert len({v["input"]["P"] for v in ups}) >= 5 and len({v["input"]["chunk"] for v in ups}) >= 5
    assert any(v["input"]["P"] % v["input"]["chunk"] for v in ups)  # a partial last chunk
    assert any(0.0 in v["expected"]["scales"] for v in ups)  # an all-zero chunk
    reasons = {v["expected"]["reason"] for v in load("up_invalid.json")}
    assert reasons == {"decode", "version", "schema", "dev_mismatch", "n_range", "length", "scale", "loss"}


@by_name("up.json")
def test_up_vector(vec: dict[str, Any]) -> None:
    inp, exp = vec["input"], vec["expected"]
    delta = f32(inp["delta_f32le"])
    np.testing.assert_array_equal(delta, np.array(inp["delta"], dtype=np.float32))  # the readable copy agrees
    assert delta.size == inp["P"]
    scales, q = quantize(delta, inp["chunk"])
    assert scales.astype("<f4").tobytes().hex() == exp["scales_f32le"]
    assert scales.tolist() == exp["scales"]
    assert q.tolist() == exp["q"]
    up = Up(
        inp["dev"],
        inp["round"],
        inp["base"],
        inp["n"],
        inp["loss"],
        inp["seq"],
        inp["chunk"],
        scales,
        q,
        inp["sub"],
        inp["meta"],
    )
    assert up.encode().hex() == exp["payload"]

    back = Up.decode(bytes.fromhex(exp["payload"]), params=inp["P"], topic_dev=inp["dev"])
    assert (back.dev, back.round, back.base, back.n, back.loss, back.seq, back.chunk, back.sub, back.meta) == (
        inp["dev"],
        inp["round"],
        inp["base"],
        inp["n"],
        inp["loss"],
        inp["seq"],
        inp["chunk"],
        inp["sub"],
        inp["meta"],
    )
    np.testing.assert_array_equal(back.q, q)
    # the dequantized delta is within half a step of the input
    step = np.repeat(scales, inp["chunk"])[: delta.size]
    assert np.all(np.abs(back.delta() - delta) <= step / 2 * (1 + 1e-5) + np.abs(delta) * 1e-6)


@by_name("task.json")
def test_task_vector(vec: dict[str, Any]) -> None:
    inp = dict(vec["input"])
    w = f32(inp.pop("w_f32le"))
    np.testing.assert_array_equal(w, np.array(inp.pop("w"), dtype=np.float32))
    inp["layers"] = tuple(inp["layers"])
    payload = bytes.fromhex(vec["expected"]["payload"])
    assert Task(w=w, **inp).encode() == payload
    back = Task.decode(payload)
    np.testing.assert_array_equal(back.w, w)
    assert (back.round, back.layers, back.select, back.sub, back.done) == (
        inp["round"],
        inp["layers"],
        inp.get("select"),
        inp.get("sub", 0),
        inp.get("done", False),
    )


@by_name("ack.json")
def test_ack_vector(vec: dict[str, Any]) -> None:
    ack = Ack(**vec["input"])
    payload = bytes.fromhex(vec["expected"]["payload"])
    assert ack.encode() == payload
    assert Ack.decode(payload) == ack


@by_name("status.json")
def test_status_vector(vec: dict[str, Any]) -> None:
    status = Status(**vec["input"])
    payload = bytes.fromhex(vec["expected"]["payload"])
    assert status.encode() == payload
    assert Status.decode(payload) == status


@by_name("up_invalid.json")
def test_invalid_up_vector(vec: dict[str, Any]) -> None:
    with pytest.raises(WireError) as info:
        Up.decode(bytes.fromhex(vec["payload"]), params=vec["params"], topic_dev=vec["topic_dev"])
    exp = vec["expected"]
    assert (info.value.reason, info.value.round, info.value.seq) == (exp["reason"], exp["round"], exp["seq"])
