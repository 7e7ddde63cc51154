"""``Up.decode``'s common-case path agrees with the per-field checks: the same update for every payload it takes,
and no answer (so the checks name the problem) for every payload they reject or it does not cover."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from flcore.encodings import encode
from flcore.errors import WireError
from flcore.messages import Up
from flcore.messages.up import _decode_checked, _decode_common
from flcore.schema import unpack

VECTORS = Path(__file__).parent / "vectors"
FIELDS = [f.name for f in dataclasses.fields(Up)]
META = {"battery": 0.5, "train_ms": 40, "ram_class": "m", "fw": "sim"}


def vectors(name: str) -> list[dict[str, Any]]:
    return list(json.loads((VECTORS / name).read_text())["vectors"])


def an_up(enc: str = "int8", **changes: Any) -> Up:
    delta = np.linspace(-0.05, 0.04, 37, dtype=np.float32)
    body, _ = encode(delta, enc, 8)
    up = Up.of(body, "d0007", 5, 4, 120, 0.75, 31, sub=1, meta=META)
    return dataclasses.replace(up, **changes)


def both(data: bytes, params: int | None, topic_dev: str | None = None) -> tuple[Up | None, Up]:
    obj = unpack(data, "up")
    return _decode_common(obj, data, params, topic_dev, 100_000), _decode_checked(obj, data, params, topic_dev, 100_000)


def assert_same(fast: Up, checked: Up) -> None:
    for name in FIELDS:
        a, b = getattr(fast, name), getattr(checked, name)
        if isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray) and a.dtype == b.dtype and a.tolist() == b.tolist(), name
        else:
            assert type(a) is type(b) and a == b, name


VALID = {
    "meta_sub": an_up().encode(),
    "no_meta_no_sub": an_up(meta=None, sub=0).encode(),
    "signed": an_up().encode(key=b"k" * 32),
    "battery_edge": an_up(meta={**META, "battery": 1.0}).encode(),
}


@pytest.mark.parametrize("name", sorted(VALID))
@pytest.mark.parametrize("params", [37, None])
def test_common_path_takes_valid_int8_updates_and_agrees(name: str, params: int | None) -> None:
    fast, checked = both(VALID[name], params, "d0007")
    assert fast is not None
    assert_same(fast, checked)


@pytest.mark.parametrize("vec", vectors("up.json"), ids=lambda v: v["name"])
def test_common_path_agrees_on_the_wire_vectors(vec: dict[str, Any]) -> None:
    fast, checked = both(bytes.fromhex(vec["expected"]["payload"]), vec["input"]["P"], vec["input"]["dev"])
    # A vector whose meta lacks a key the gateway reads is not the common case: the checks alone decode it.
    if fast is not None:
        assert_same(fast, checked)
    else:
        assert vec["input"]["meta"] is not None


def test_decoded_update_stays_frozen() -> None:
    up = Up.decode(VALID["meta_sub"], params=37)
    with pytest.raises(dataclasses.FrozenInstanceError):
        up.n = 1  # type: ignore[misc]
    assert not up.q.flags.writeable and not up.scales.flags.writeable


def test_other_encodings_take_the_checked_path() -> None:
    for enc in ("int4", "topk", "f32"):
        data = an_up(enc).encode()
        fast, checked = both(data, 37)
        assert fast is None and checked.enc == enc


def payload(**changes: Any) -> bytes:
    obj = msgpack.unpackb(an_up().encode())
    obj.update(changes)
    return msgpack.packb(obj, use_bin_type=True)


INVALID = {
    "meta_nil": payload(meta=None),
    "sub_nil": payload(sub=None),
    "sub_negative": payload(sub=-1),
    "sig_nil": payload(sig=None),
    "sig_not_last": payload(sig=b"s" * 32, fw=1),
    "loss_nan": payload(loss=float("nan")),
    "loss_inf": payload(loss=float("inf")),
    "loss_huge": payload(loss=2e30),
    "battery_above_1": payload(meta={**META, "battery": 1.5}),
    "battery_nan": payload(meta={**META, "battery": float("nan")}),
    "meta_bool": payload(meta={**META, "train_ms": True}),
    "scale_nan": payload(scales=np.array([0.1, np.nan, 0.1, 0.1, 0.1], dtype="<f4").tobytes()),
    "scale_negative": payload(scales=np.array([0.1, 0.1, -0.1, 0.1, 0.1], dtype="<f4").tobytes()),
    "scale_inf": payload(scales=np.array([0.1, 0.1, 0.1, 0.1, np.inf], dtype="<f4").tobytes()),
    "q_short": payload(q=bytes(36)),
    "scales_short": payload(scales=bytes(16)),
    "n_zero": payload(n=0),
    "n_over_cap": payload(n=100_001),
    "chunk_zero": payload(chunk=0),
    "seq_negative": payload(seq=-1),
    "round_zero": payload(round=0),
    "base_negative": payload(base=-1),
    "dev_bad": payload(dev="d 7"),
    "dev_other": payload(dev="d0008"),
    "enc_unknown": payload(enc="int2"),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_common_path_leaves_every_invalid_payload_to_the_checks(name: str) -> None:
    data = INVALID[name]
    assert _decode_common(unpack(data, "up"), data, 37, "d0007", 100_000) is None
    with pytest.raises(WireError):
        Up.decode(data, params=37, topic_dev="d0007")


@pytest.mark.parametrize("vec", vectors("up_invalid.json"), ids=lambda v: v["name"])
def test_common_path_takes_no_invalid_vector(vec: dict[str, Any]) -> None:
    data = bytes.fromhex(vec["payload"])
    try:
        obj = unpack(data, "up")
    except WireError:
        return  # rejected before either path runs
    assert _decode_common(obj, data, vec["params"], vec["topic_dev"], 100_000) is None
