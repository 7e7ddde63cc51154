"""Local training: the flat order matches flcore's numpy forward pass, SGD is plain SGD, and loss falls."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from device_sim.trainer import forward, train_centralized, train_local
from flcore.datasets import sensors
from flcore.model import ModelSpec
from iotfl.datasets import load


def _blobs(n: int = 60, features: int = 6, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = rng.normal(0, 0.5, size=(n, features)).astype(np.float32)
    x[np.arange(n), y] += 2.0
    return x, y


@pytest.mark.parametrize("layers", [(6, 3), (64, 32, 10), (10, 16, 8, 5)])
def test_forward_matches_flcore_logits_and_torch_linear(layers: tuple[int, ...]) -> None:
    spec = ModelSpec(layers)
    w = np.random.default_rng(1).normal(0, 0.3, spec.param_count).astype(np.float32)
    x = np.random.default_rng(2).normal(size=(7, layers[0])).astype(np.float32)
    ours = forward(spec, torch.from_numpy(w), torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, spec.logits(w, x), rtol=1e-5, atol=1e-5)
    # torch.nn.Linear stores weight as [out, in]: loading the contract's views into one must agree too.
    mods: list[torch.nn.Module] = []
    for i, (wi, bi) in enumerate(spec.unflatten(w)):
        lin = torch.nn.Linear(wi.shape[1], wi.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(wi.copy()))
            lin.bias.copy_(torch.from_numpy(bi.copy()))
        mods += [lin] if i == len(layers) - 2 else [lin, torch.nn.ReLU()]
    with torch.no_grad():
        ref = torch.nn.Sequential(*mods)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_one_full_batch_step_is_plain_sgd_in_flat_order() -> None:
    spec = ModelSpec((6, 4, 3))
    x, y = _blobs(12)
    w = spec.init(3)
    new_w, loss = train_local(spec, w, x, y, lr=0.1, epochs=1, batch=len(x), seed=0)
    theta = torch.from_numpy(w.copy()).requires_grad_(True)
    ref_loss = torch.nn.functional.cross_entropy(forward(spec, theta, torch.from_numpy(x)), torch.from_numpy(y))
    ref_loss.backward()
    ref_loss = ref_loss.detach()
    expected = w - 0.1 * theta.grad.numpy()
    np.testing.assert_allclose(new_w, expected, rtol=1e-5, atol=1e-6)
    assert loss == pytest.approx(ref_loss.item(), rel=1e-5)
    _, eval_loss = spec.evaluate(w, x, y)
    assert loss == pytest.approx(eval_loss, rel=1e-4)  # numpy and torch agree on the loss of the same weights


def test_loss_falls_and_accuracy_rises() -> None:
    spec = ModelSpec((6, 8, 3))
    x, y = _blobs(90)
    w = spec.init(0)
    acc0, loss0 = spec.evaluate(w, x, y)
    new_w, train_loss = train_local(spec, w, x, y, lr=0.1, epochs=20, batch=8, seed=0)
    acc1, loss1 = spec.evaluate(new_w, x, y)
    assert loss1 < 0.5 * loss0
    assert train_loss < loss0
    assert acc1 > max(acc0, 0.9)


def test_reproducible_and_leaves_input_alone() -> None:
    spec = ModelSpec((6, 8, 3))
    x, y = _blobs(30)
    w = spec.init(0)
    before = w.copy()
    a, la = train_local(spec, w, x, y, 0.1, 3, 4, seed=7)
    b, lb = train_local(spec, w, x, y, 0.1, 3, 4, seed=7)
    c, _ = train_local(spec, w, x, y, 0.1, 3, 4, seed=8)
    np.testing.assert_array_equal(w, before)
    np.testing.assert_array_equal(a, b)
    assert la == lb
    assert not np.array_equal(a, c)  # another shuffle, other mini-batches
    assert a.dtype == np.float32 and a.shape == (spec.param_count,)


def test_zero_epochs_returns_the_weights_and_their_loss() -> None:
    spec = ModelSpec((6, 3))
    x, y = _blobs(10)
    w = spec.init(0)
    out, loss = train_local(spec, w, x, y, 0.1, 0, 4, 0)
    np.testing.assert_array_equal(out, w)
    assert loss == pytest.approx(spec.evaluate(w, x, y)[1], rel=1e-4)


def test_bad_inputs_raise_clear_errors() -> None:
    spec = ModelSpec((6, 3))
    x, y = _blobs(10)
    with pytest.raises(ValueError, match="parameters"):
        train_local(spec, np.zeros(5, np.float32), x, y, 0.1, 1, 4, 0)
    with pytest.raises(ValueError, match="sample"):
        train_local(spec, spec.init(0), x[:0], y[:0], 0.1, 1, 4, 0)
    with pytest.raises(ArithmeticError, match="diverged"):
        train_local(spec, spec.init(0), x * 1e30, y, 1e30, 2, 4, 0)


def test_digits_local_training_takes_milliseconds() -> None:
    spec = ModelSpec((64, 32, 10))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(29, 64)).astype(np.float32), rng.integers(0, 10, 29)
    train_local(spec, spec.init(0), x, y, 0.1, 2, 8, 0)  # warm-up
    started = time.perf_counter()
    for i in range(20):
        train_local(spec, spec.init(0), x, y, 0.1, 2, 8, i)
    per_call = (time.perf_counter() - started) / 20
    assert per_call < 0.1, f"{per_call * 1000:.1f} ms per local training"


def test_centralized_baselines() -> None:
    started = time.perf_counter()
    digits = train_centralized(load("digits", 0))
    assert time.perf_counter() - started < 10
    assert digits >= 0.93
    assert 0.74 <= train_centralized(sensors(0)) <= 0.85  # the tutorial's ≈ 0.78: its classes overlap
