"""The update encodings (flcore.encodings): exact int4 packing, top-k selection, round trips and error feedback."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.encodings import ENCODINGS, F32, INT4, INT8, TOPK, encode, parse, parse_encodings
from flcore.encodings.int4 import pack4, quantize4, unpack4
from flcore.encodings.topk import kept, parse_idx, sparsify, with_feedback
from flcore.errors import WireError
from flcore.quantize import quantize


def test_int4_packs_low_nibble_first_in_twos_complement() -> None:
    q = np.array([1, -1, 7, -7, 0, 3, -2], dtype=np.int8)
    # bytes: (1 | -1<<4) = 0xF1, (7 | -7<<4) = 0x97, (0 | 3<<4) = 0x30, (-2 | pad 0) = 0x0E
    assert pack4(q) == bytes([0xF1, 0x97, 0x30, 0x0E])
    np.testing.assert_array_equal(unpack4(bytes([0xF1, 0x97, 0x30, 0x0E]), 7), q)


def test_int4_every_value_round_trips() -> None:
    q = np.arange(-7, 8, dtype=np.int8)
    assert len(pack4(q)) == 8
    np.testing.assert_array_equal(unpack4(pack4(q), q.size), q)


@pytest.mark.parametrize(
    ("data", "size", "reason"),
    [
        (bytes([0x08]), 2, "schema"),  # -8 in the low nibble
        (bytes([0x80]), 2, "schema"),  # -8 in the high nibble
        (bytes([0x11, 0x10]), 3, "schema"),  # odd count, non-zero pad nibble
        (bytes([0x11]), 3, "length"),
        (bytes([0x11, 0x01, 0x00]), 3, "length"),
    ],
)
def test_int4_refuses_bad_packings(data: bytes, size: int, reason: str) -> None:
    with pytest.raises(WireError) as info:
        unpack4(data, size)
    assert info.value.reason == reason


def test_int4_quantizes_with_scale_max_over_7() -> None:
    scales, q = quantize4(np.array([0.7, -0.35, 0.1, 0.0, 1.4, -1.4], dtype=np.float32), 3)
    np.testing.assert_allclose(scales, [0.1, 0.2])
    np.testing.assert_array_equal(q, [7, -4, 1, 0, 7, -7])  # -3.5 rounds half away from zero
    with pytest.raises(ValueError):
        pack4(np.array([8], dtype=np.int8))


def test_topk_keeps_the_largest_magnitudes_in_index_order_lower_index_on_ties() -> None:
    x = np.array([0.1, -0.9, 0.3, 0.9, -0.05, 0.3], dtype=np.float32)
    idx, scales, q = sparsify(x, 0.5, 2)  # k = 3: |-0.9|, |0.9|, then the first 0.3
    np.testing.assert_array_equal(idx, [1, 2, 3])
    assert idx.dtype == np.uint32
    np.testing.assert_array_equal(scales, quantize(x[[1, 2, 3]], 2)[0])
    np.testing.assert_array_equal(q, quantize(x[[1, 2, 3]], 2)[1])
    assert [kept(100, f) for f in (0.001, 0.05, 0.051, 1.0)] == [1, 5, 6, 100]
    with pytest.raises(ValueError):
        kept(10, 0.0)


@pytest.mark.parametrize(
    ("idx", "reason"),
    [([3, 3], "schema"), ([4, 2], "schema"), ([0, 10], "schema"), ([], "length"), (list(range(11)), "length")],
)
def test_topk_indices_must_be_strictly_increasing_and_in_range(idx: list[int], reason: str) -> None:
    with pytest.raises(WireError) as info:
        parse_idx(np.array(idx, dtype="<u4").tobytes(), 10)
    assert info.value.reason == reason
    with pytest.raises(WireError) as info:
        parse_idx(b"\x00\x00\x00", 10)
    assert info.value.reason == "length"


def test_error_feedback_sends_everything_eventually() -> None:
    """Σ sent + the last residual = Σ deltas (up to float32 rounding), and the residual is bounded."""
    rng = np.random.default_rng(1)
    deltas = rng.normal(size=(30, 500)).astype(np.float32)
    residual = None
    sent = np.zeros(500, dtype=np.float64)
    for delta in deltas:
        (idx, scales, q), residual = with_feedback(delta, residual, 0.05, 8)
        assert idx.size == 25
        body, _ = encode(np.zeros(500), INT8, 8)  # unrelated encodings do not touch the residual
        sent[idx] += np.repeat(scales, 8)[: q.size] * q
    assert residual is not None
    np.testing.assert_allclose(sent + residual, deltas.sum(axis=0, dtype=np.float64), atol=1e-4)
    assert np.abs(residual).max() < np.abs(deltas.sum(axis=0)).max() + 10


def test_error_feedback_drops_a_residual_of_another_model() -> None:
    (_, _, _), left = with_feedback(np.ones(4, dtype=np.float32), np.ones(7, dtype=np.float32), 0.5, 4)
    np.testing.assert_array_equal(left, [0, 0, 1, 1])


@pytest.mark.parametrize("enc", ENCODINGS)
def test_every_encoding_round_trips_through_its_wire_fields(enc: str) -> None:
    delta = np.random.default_rng(2).normal(scale=0.02, size=1001).astype(np.float32)
    body, residual = encode(delta, enc, 64, 0.1)
    assert (residual is not None) == (enc == TOPK)
    idx = body.idx_bytes()
    back = parse(enc, 1001, 64, body.scales.astype("<f4").tobytes(), body.q_bytes(), idx)
    np.testing.assert_array_equal(back.delta(), body.delta())
    assert body.nbytes == {INT8: 1001 + 4 * 16, INT4: 501 + 4 * 16, TOPK: 101 * 5 + 4 * 2, F32: 4004}[enc]
    error = np.abs(body.delta() - delta).max()
    step = {INT8: 127, INT4: 7}.get(enc)
    if step is not None:  # within half a quantization step of the largest chunk
        assert error <= np.abs(delta).max() / step / 2 + 1e-7
    elif enc == F32:
        assert error == 0
    else:  # topk: what it dropped is in the residual
        assert residual is not None
        np.testing.assert_allclose(body.delta() + residual, delta, atol=1e-7)
        assert np.count_nonzero(body.delta()) <= 101


def test_parse_encodings() -> None:
    assert parse_encodings(" int8, topk ,int8") == (INT8, TOPK)
    for bad in ("", "int8,int2"):
        with pytest.raises(ValueError):
            parse_encodings(bad)
