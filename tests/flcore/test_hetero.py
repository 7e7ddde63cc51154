"""flcore.hetero (width-sliced sub-models), WeightedSum over sliced updates, and the wire fields that carry them:
task ``widths``, up ``width``, agg ``cover``."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.encodings import encode
from flcore.errors import WireError
from flcore.fedavg import WeightedSum
from flcore.hetero import indices, slice_weights, sub_layers, sub_spec, width_for
from flcore.messages import Agg, Task, Up
from flcore.model import ModelSpec
from flcore.resources import can_train, class_map_text, parse_class_map

SPEC = ModelSpec((3, 4, 2))  # 12 + 4 weights/biases, then 8 + 2: 26 parameters


def test_sub_layers_cut_hidden_layers_only_and_round_up() -> None:
    assert sub_layers((64, 32, 10), 0.5) == (64, 16, 10)
    assert sub_layers((64, 32, 16, 10), 0.25) == (64, 8, 4, 10)
    assert sub_layers((20, 3, 6), 0.5) == (20, 2, 6)  # ceil(1.5)
    assert sub_layers((20, 3, 6), 0.01) == (20, 1, 6)  # at least one unit
    assert sub_layers((64, 32, 10), 1.0) == (64, 32, 10)


def test_indices_pick_the_top_left_blocks_in_the_sub_models_flat_order() -> None:
    full = np.arange(SPEC.param_count, dtype=np.float32)
    sub = sub_spec(SPEC, 0.5)  # (3, 2, 2)
    sliced = slice_weights(SPEC, full, 0.5)
    assert len(sliced) == sub.param_count == len(indices(SPEC, 0.5)) == 6 + 2 + 4 + 2
    (w1, b1), (w2, b2) = SPEC.unflatten(full)
    (s1, t1), (s2, t2) = sub.unflatten(sliced)
    np.testing.assert_array_equal(s1, w1[:2, :3])
    np.testing.assert_array_equal(t1, b1[:2])
    np.testing.assert_array_equal(s2, w2[:, :2])
    np.testing.assert_array_equal(t2, b2)
    idx = indices(SPEC, 0.5)
    assert len(set(idx.tolist())) == len(idx) and not idx.flags.writeable


def test_the_sliced_sub_model_computes_what_the_full_one_does_with_the_other_units_zeroed() -> None:
    spec = ModelSpec((5, 8, 3))
    w = spec.init(1)
    idx = indices(spec, 0.5)
    masked = np.zeros_like(w)
    masked[idx] = w[idx]
    x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(sub_spec(spec, 0.5).logits(w[idx], x), spec.logits(masked, x), rtol=1e-5)


def test_a_half_width_model_fits_a_class_the_full_one_does_not() -> None:
    har = ModelSpec((20, 32, 6))
    assert not can_train(har, "class1", 8) and can_train(sub_spec(har, 0.5), "class1", 8)
    assert width_for({"class1": 0.5}, "class1") == 0.5 and width_for({"class1": 0.5}, "class2") == 1.0
    assert width_for(None, "class1") == 1.0


@pytest.mark.parametrize("width", [0.0, -0.5, 1.5, True])
def test_a_width_outside_0_1_is_refused(width: float) -> None:
    with pytest.raises(ValueError, match="width must be"):
        indices(SPEC, width)


def test_weighted_sum_averages_each_parameter_over_the_devices_that_trained_it() -> None:
    acc = WeightedSum(SPEC.param_count)
    whole = np.full(SPEC.param_count, 1.0, dtype=np.float32)
    acc.add(whole, 3, 0.5)  # n = 3, every parameter moves by 1
    idx = indices(SPEC, 0.5)
    acc.add_sliced(np.full(len(idx), 5.0), idx, 1, 0.1)  # n = 1, its slice moves by 5
    mean = acc.mean()
    inside = np.zeros(SPEC.param_count, dtype=bool)
    inside[idx] = True
    np.testing.assert_allclose(mean[inside], (3 * 1 + 1 * 5) / 4)
    np.testing.assert_allclose(mean[~inside], 1.0)  # only the whole update trained these
    assert (acc.n, acc.k) == (4, 2)
    assert acc.cover is not None and set(acc.cover[inside]) == {4.0} and set(acc.cover[~inside]) == {3.0}
    acc.add(whole, 2, 0.5)  # a whole update after a sliced one counts everywhere
    assert set(acc.cover[~inside]) == {5.0}


def test_a_parameter_no_device_trained_stays_put_and_sums_with_cover_add_up() -> None:
    idx = indices(SPEC, 0.5)
    part = WeightedSum(SPEC.param_count)
    part.add_sliced(np.ones(len(idx)), idx, 2, 0.3)
    mean = part.mean()
    assert np.count_nonzero(mean) == len(idx)  # the rest: 0, not a division by zero
    total = WeightedSum(SPEC.param_count)
    total.add_sum(part.total, part.n, part.k, 0.3, part.cover)
    total.add_sum(np.full(SPEC.param_count, 4.0), 2, 1, 0.3)  # a gateway without slices: n everywhere
    expected = np.full(SPEC.param_count, 4.0 / 2)
    expected[idx] = (2 * 1 + 4.0) / 4
    np.testing.assert_allclose(total.mean(), expected)
    with pytest.raises(ValueError, match="cover must hold"):
        total.add_sum(np.zeros(SPEC.param_count), 1, 1, 0.0, np.full(SPEC.param_count, 2.0))


def _sliced_up(width: float, size: int | None = None, enc: str = "int8") -> Up:
    count = size if size is not None else len(indices(SPEC, width))
    body, _ = encode(np.linspace(-1, 1, count, dtype=np.float32), enc, 4, None, None)
    return Up.of(body, "d1", 2, 1, 7, 0.25, 3, width=width)


def test_up_width_round_trips_and_is_checked_against_the_rounds_layers() -> None:
    data = _sliced_up(0.5).encode()
    up = Up.decode(data, params=SPEC.param_count, layers=SPEC.layers)
    assert up.width == 0.5 and len(up.q) == sub_spec(SPEC, 0.5).param_count
    assert Up.decode(data).width == 0.5  # a decoder on its own takes len(q)
    assert b"width" not in _sliced_up(1.0, SPEC.param_count).encode()  # a whole update stays a v1 up
    for payload, reason in (
        (_sliced_up(0.5, size=SPEC.param_count).encode(), "length"),  # the whole model's values at width 0.5
        (data, "length"),  # a receiver that knows P but not the layers cannot place a slice
        (_sliced_up(0.5, enc="f32").encode(), "enc"),
    ):
        with pytest.raises(WireError) as err:
            Up.decode(payload, params=SPEC.param_count, layers=SPEC.layers if payload is not data else None)
        assert err.value.reason == reason


def test_task_widths_and_agg_cover_round_trip_and_bad_ones_are_refused() -> None:
    w = SPEC.init(0)
    task = Task(1, 0, SPEC.layers, w, 0.1, 1, 8, 4, 0.0, 0.1, widths={"class1": 0.5})
    assert Task.decode(task.encode()).widths == {"class1": 0.5}
    assert Task.decode(Task(1, 0, SPEC.layers, w, 0.1, 1, 8, 4, 0.0, 0.1).encode()).widths is None
    with pytest.raises(WireError, match="widths"):
        Task.decode(Task(1, 0, SPEC.layers, w, 0.1, 1, 8, 4, 0.0, 0.1, widths={"class1": 1.5}).encode())
    cover = np.full(SPEC.param_count, 6.0, dtype=np.float32)
    agg = Agg("gw0", 1, 0, 10, 2, np.ones(SPEC.param_count, dtype=np.float32), 0.5, cover=cover)
    np.testing.assert_array_equal(Agg.decode(agg.encode()).cover, cover)
    assert Agg.decode(Agg("gw0", 1, 0, 10, 2, cover * 0, 0.5).encode()).cover is None
    for bad in (np.full(SPEC.param_count, 11.0, dtype=np.float32), np.ones(3, dtype=np.float32)):
        with pytest.raises(WireError):
            Agg.decode(Agg("gw0", 1, 0, 10, 2, np.ones(SPEC.param_count, dtype=np.float32), 0.5, cover=bad).encode())


def test_class_maps_parse_and_print_back() -> None:
    assert parse_class_map("class1=0.5, class2=0.25", what="widths", lo=0, hi=1) == {"class1": 0.5, "class2": 0.25}
    assert class_map_text({"class1": 0.5}) == "class1=0.5"
    for bad, match in (("class9=0.5", "CLASS=VALUE"), ("class1", "CLASS=VALUE"), ("class1=x", "not a number")):
        with pytest.raises(ValueError, match=match):
            parse_class_map(bad, what="widths", lo=0, hi=1)
    with pytest.raises(ValueError, match="outside"):
        parse_class_map("class1=0", what="widths", lo=0, hi=1)
