"""The hostile-input caps of the decoders: sample counts, scale and loss magnitudes, integer ranges, with reasons."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest

from flcore.errors import WireError
from flcore.messages import MAX_INT32, MAX_LOSS, MAX_SAMPLES, MAX_SCALE, Agg, Up
from flcore.quantize import quantize

P = 12


def up_bytes(**overrides: Any) -> bytes:
    scales, q = quantize(np.linspace(-1, 1, P, dtype=np.float32), 4)
    fields = msgpack.unpackb(Up("d1", 2, 1, 50, 0.3, 4, 4, scales, q).encode())
    fields.update(overrides)
    return msgpack.packb(fields, use_bin_type=True)


def agg_bytes(**overrides: Any) -> bytes:
    fields = msgpack.unpackb(Agg("gw0", 2, 1, 100, 2, np.ones(P, dtype=np.float32), 0.4).encode())
    fields.update(overrides)
    return msgpack.packb(fields, use_bin_type=True)


def reason(decode: Any, data: bytes, **kw: Any) -> str:
    with pytest.raises(WireError) as err:
        decode(data, **kw)
    return err.value.reason


@pytest.mark.parametrize(("n", "cap"), [(MAX_SAMPLES + 1, MAX_SAMPLES), (51, 50), (0, 50)])
def test_up_n_is_capped_at_max_samples(n: int, cap: int) -> None:
    assert reason(Up.decode, up_bytes(n=n), params=P, max_samples=cap) == "n_range"
    assert Up.decode(up_bytes(n=cap), params=P, max_samples=cap).n == cap


def test_up_scale_beyond_the_cap_is_refused_since_n_times_delta_would_overflow_float32() -> None:
    scales = np.array([1.0, MAX_SCALE * 1.01, 0.0], dtype="<f4").tobytes()
    assert reason(Up.decode, up_bytes(scales=scales), params=P) == "scale"
    ok = np.array([1.0, MAX_SCALE, 0.0], dtype="<f4")
    up = Up.decode(up_bytes(scales=ok.tobytes()), params=P)
    assert np.all(np.isfinite((MAX_SAMPLES * up.delta()).astype(np.float32)))


@pytest.mark.parametrize("loss", [MAX_LOSS * 10, -MAX_LOSS * 10, 1e308])
def test_up_loss_beyond_the_cap_is_refused(loss: float) -> None:
    assert reason(Up.decode, up_bytes(loss=loss), params=P) == "loss"


def test_agg_n_is_capped_at_k_times_max_samples() -> None:
    assert reason(Agg.decode, agg_bytes(n=2 * MAX_SAMPLES + 1, k=2), params=P) == "n_range"
    assert reason(Agg.decode, agg_bytes(n=2 * 500 + 1, k=2), params=P, max_samples=500) == "n_range"
    assert Agg.decode(agg_bytes(n=2 * 500, k=2), params=P, max_samples=500).n == 1000


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("round", MAX_INT32 + 1, "schema"),
        ("base", MAX_INT32 + 1, "schema"),
        ("k", MAX_INT32 + 1, "schema"),
        ("bytes", 2**64 - 1, "schema"),
        ("loss", 1e300, "loss"),
        ("sum", np.full(P, 1e38, dtype="<f4").tobytes(), "scale"),
    ],
)
def test_agg_values_the_cloud_cannot_store_or_average_are_refused(field: str, value: Any, why: str) -> None:
    assert reason(Agg.decode, agg_bytes(**{field: value}), params=P) == why
