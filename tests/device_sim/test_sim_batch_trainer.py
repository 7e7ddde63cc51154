"""Batched local training: every row ends where ``train_local`` ends for the same device, seed and data."""

from __future__ import annotations

import numpy as np
import pytest

from device_sim.batch_trainer import batch_schedule, train_batched
from device_sim.trainer import train_local
from flcore.datasets import sensors
from flcore.model import ModelSpec
from flcore.partition import dirichlet

DATA = sensors(0)
SPEC = ModelSpec(DATA.layers)


def test_schedule_draws_the_per_device_shuffles() -> None:
    pos, mask = batch_schedule([5, 2], epochs=2, batch=2, seeds=[7, 8])
    assert pos.shape == mask.shape == (2, 6, 2)  # device 0: 3 steps per epoch; device 1: 1
    rng = np.random.default_rng(7)
    first, second = rng.permutation(5), rng.permutation(5)
    assert pos[0][mask[0]].tolist() == [*first.tolist(), *second.tolist()]
    assert mask[0].sum(axis=1).tolist() == [2, 2, 1, 2, 2, 1]
    assert mask[1].sum(axis=1).tolist() == [2, 2, 0, 0, 0, 0]


@pytest.mark.parametrize("epochs,batch", [(2, 8), (1, 3), (3, 32)])
def test_rows_match_train_local(epochs: int, batch: int) -> None:
    shards = dirichlet(DATA.y_train, 12, 0.5, np.random.default_rng(3))
    rng = np.random.default_rng(4)
    start = np.stack([SPEC.init(0) + rng.normal(0, 0.01, SPEC.param_count).astype(np.float32) for _ in shards])
    seeds = [100 + i for i in range(len(shards))]
    w, losses = train_batched(SPEC, start, DATA.x_train, DATA.y_train, shards, 0.1, epochs, batch, seeds)
    assert w.shape == start.shape and w.dtype == np.float32
    for i, shard in enumerate(shards):
        ref, loss = train_local(SPEC, start[i], DATA.x_train[shard], DATA.y_train[shard], 0.1, epochs, batch, seeds[i])
        np.testing.assert_allclose(w[i], ref, atol=2e-5)
        assert losses[i] == pytest.approx(loss, abs=1e-5)
        assert not np.allclose(w[i], start[i])


def test_zero_epochs_keeps_the_weights_and_reports_their_loss() -> None:
    shards = [np.arange(10), np.arange(10, 13)]
    start = np.stack([SPEC.init(0), SPEC.init(1)])
    w, losses = train_batched(SPEC, start, DATA.x_train, DATA.y_train, shards, 0.1, 0, 4, [1, 2])
    np.testing.assert_array_equal(w, start)
    for i, shard in enumerate(shards):
        _, loss = train_local(SPEC, start[i], DATA.x_train[shard], DATA.y_train[shard], 0.1, 0, 4, 0)
        assert losses[i] == pytest.approx(loss, abs=1e-5)


def test_a_diverging_device_gets_nan_and_the_others_train() -> None:
    shards = [np.arange(20), np.arange(20, 40)]
    start = np.stack([SPEC.init(0), SPEC.init(0)])
    start[1, 0] = np.float32(3e38)  # overflows on the first update
    w, losses = train_batched(SPEC, start, DATA.x_train, DATA.y_train, shards, 1e3, 1, 8, [1, 2])
    assert np.isnan(losses[1]) and np.isfinite(losses[0])
    assert np.all(np.isfinite(w[0]))


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one row"):
        train_batched(SPEC, SPEC.init(0)[None, :], DATA.x_train, DATA.y_train, [np.arange(3)] * 2, 0.1, 1, 8, [1, 2])
    with pytest.raises(ValueError, match="a sample per device"):
        train_batched(SPEC, SPEC.init(0)[None, :], DATA.x_train, DATA.y_train, [np.arange(0)], 0.1, 1, 8, [1])
