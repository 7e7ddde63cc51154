"""The pure personalization helpers: the head's flat span, a spliced head, the body's features, a device's local
split and the accuracy sums."""

from __future__ import annotations

import numpy as np
import pytest

from flcore.model import ModelSpec
from flcore.personal import Pers, features, head_slice, local_split, splice_head

SPEC = ModelSpec((4, 3, 2))  # 4·3 + 3 = 15 body parameters, then a 2·3 + 2 = 8 head


def test_head_is_the_last_layers_weight_then_bias() -> None:
    assert head_slice(SPEC) == slice(15, 23)
    assert head_slice(ModelSpec((5, 2))) == slice(0, 12)  # a one-layer model is all head
    w = np.arange(SPEC.param_count, dtype=np.float32)
    weight, bias = SPEC.unflatten(w)[-1]
    assert np.array_equal(w[head_slice(SPEC)], np.concatenate([weight.ravel(), bias]))


def test_splice_replaces_only_the_head_in_a_copy() -> None:
    w = np.zeros(SPEC.param_count, dtype=np.float32)
    out = splice_head(SPEC, w, np.full(8, 2.5, dtype=np.float32))
    assert out.dtype == np.float32 and out[:15].tolist() == [0.0] * 15 and out[15:].tolist() == [2.5] * 8
    assert not w.any()
    with pytest.raises(ValueError):
        splice_head(SPEC, w, np.zeros(7, dtype=np.float32))


def test_features_are_what_the_head_sees() -> None:
    rng = np.random.default_rng(0)
    w, x = SPEC.init(1), rng.normal(size=(6, 4)).astype(np.float32)
    weight, bias = SPEC.unflatten(w)[-1]
    h = features(SPEC, w, x)
    assert h.shape == (6, 3) and np.all(h >= 0)
    assert np.allclose(h @ weight.T + bias, SPEC.logits(w, x), atol=1e-5)
    assert np.array_equal(features(ModelSpec((4, 2)), ModelSpec((4, 2)).init(0), x), x)


@pytest.mark.parametrize(("n", "held"), [(1, 0), (2, 1), (3, 1), (10, 2), (11, 2), (13, 3), (100, 20)])
def test_local_split_holds_out_a_fifth_at_least_one(n: int, held: int) -> None:
    train, test = local_split(n, seed=7)
    assert len(test) == held and len(train) == n - held
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(n))
    again = local_split(n, seed=7)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)


def test_local_split_depends_on_the_seed_and_refuses_nonsense() -> None:
    assert not np.array_equal(local_split(50, 1)[1], local_split(50, 2)[1])
    for n, share in ((0, 0.2), (5, 0.0), (5, 1.0)):
        with pytest.raises(ValueError):
            local_split(n, 0, share)


def test_pers_sums_and_means() -> None:
    total = Pers() + Pers(0.9, 0.5, 1) + Pers(0.7, 0.6, 1)
    assert total == Pers(pytest.approx(1.6), pytest.approx(1.1), 2)
    assert total.means() == (pytest.approx(0.8), pytest.approx(0.55))
    assert Pers().means() is None
