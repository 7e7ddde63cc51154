"""Local training of many devices at once: the SGD of ``device_sim.trainer`` run for D devices in lockstep.

Each device keeps its own flat parameters, a row of one ``[D, P]`` tensor; every layer's weight is a view
``[D, out, in]`` of it, so a step is one batched matmul per layer (``torch.baddbmm``) for the whole fleet. A device's
mini-batches are exactly those ``train_local`` draws for the same seed (one ``permutation`` per epoch from
``default_rng(seed)``, chunks of ``batch``, the last one short); devices with fewer steps than the longest are
masked out of the later steps (their gradient is zero), so each row ends where ``train_local`` would have ended.
The loss of a step is each device's own mean over its (unpadded) batch, as in per-device mode; the rows are summed
only to get all per-device gradients from one backward pass (the rows do not interact).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from device_sim.trainer import configure_threads
from flcore.model import ModelSpec


def batch_schedule(
    sizes: Sequence[int], epochs: int, batch: int, seeds: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Each device's mini-batches, step by step: local sample positions ``[D, S, batch]`` and a validity mask.

    Device ``i`` draws ``default_rng(seeds[i]).permutation(sizes[i])`` once per epoch and cuts it into chunks of
    ``batch``; ``S`` is the longest device's step count, shorter ones are padded with masked position 0.
    """
    steps = [epochs * -(-n // batch) for n in sizes]
    longest = max(steps, default=0)
    pos = np.zeros((len(sizes), longest, batch), dtype=np.int64)
    mask = np.zeros((len(sizes), longest, batch), dtype=bool)
    for i, (n, seed) in enumerate(zip(sizes, seeds, strict=True)):
        rng = np.random.default_rng(seed)
        per_epoch = -(-n // batch)
        for e in range(epochs):
            flat = np.full(per_epoch * batch, -1, dtype=np.int64)
            flat[:n] = rng.permutation(n)
            cells = flat.reshape(per_epoch, batch)
            rows = slice(e * per_epoch, (e + 1) * per_epoch)
            pos[i, rows] = np.maximum(cells, 0)
            mask[i, rows] = cells >= 0
    return pos, mask


def _unflatten(spec: ModelSpec, w: np.ndarray) -> list[torch.Tensor]:
    """Per layer, a contiguous weight ``[D, out, in]`` and bias ``[D, out]`` (separate leaves: a backward through
    slices of one ``[D, P]`` tensor would write a full-size gradient per slice)."""
    out: list[torch.Tensor] = []
    for wi, shape, bi in spec.layout():
        out += [torch.from_numpy(w[:, wi].reshape(len(w), *shape).copy()), torch.from_numpy(w[:, bi].copy())]
    return [p.requires_grad_(True) for p in out]


def _forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Logits ``[D, B, classes]`` of D MLPs on their own inputs ``x`` ``[D, B, in]``."""
    h = x
    layers = len(params) // 2
    for i in range(layers):
        weight, bias = params[2 * i], params[2 * i + 1]
        h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
        if i < layers - 1:
            h = F.relu(h)
    return h


def _masked_loss(
    params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per device: the sum of its valid samples' cross-entropies and their count."""
    logits = _forward(params, x)
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(mask.shape)
    return (ce * mask).sum(dim=1), mask.sum(dim=1)


def train_batched(
    spec: ModelSpec,
    w: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    shards: Sequence[np.ndarray],
    lr: float,
    epochs: int,
    batch: int,
    seeds: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """SGD for D devices from their start weights ``w`` ``[D, P]``; device ``i`` trains on ``x[shards[i]]``.

    Returns the new weights ``[D, P]`` float32 and each device's mean training loss ``[D]`` (NaN where a device
    diverged: its row is non-finite too, and the caller drops it, as ``train_local`` would raise).
    """
    configure_threads()
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2 or w.shape != (len(shards), spec.param_count) or len(seeds) != len(shards):
        raise ValueError(f"need one row of {spec.param_count} weights and one seed per shard, got {w.shape}")
    if batch < 1 or epochs < 0 or any(len(s) == 0 for s in shards):
        raise ValueError(f"need batch >= 1, epochs >= 0 and a sample per device, got batch={batch} epochs={epochs}")
    sizes = [len(s) for s in shards]
    # Global sample index of each device's local position: padded shards, so a gather serves every device at once.
    table = np.zeros((len(shards), max(sizes)), dtype=np.int64)
    for i, s in enumerate(shards):
        table[i, : len(s)] = s
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    params = _unflatten(spec, w)
    if epochs == 0:  # report the loss of the unchanged models on their whole shards
        idx = torch.from_numpy(table)
        valid = torch.from_numpy(np.arange(table.shape[1])[None, :] < np.array(sizes)[:, None])
        with torch.no_grad():
            total, seen = _masked_loss(params, xt[idx], yt[idx], valid.float())
        return w.copy(), (total / seen).numpy().astype(np.float64)
    pos, mask = batch_schedule(sizes, epochs, batch, seeds)
    glob = torch.from_numpy(np.take_along_axis(table[:, None, :], pos.reshape(len(sizes), -1)[:, None, :], axis=2))
    glob = glob.view(pos.shape)
    maskt = torch.from_numpy(mask).float()
    total = torch.zeros(len(sizes), dtype=torch.float64)
    seen = torch.zeros(len(sizes), dtype=torch.float64)
    for step in range(pos.shape[1]):
        idx, m = glob[:, step], maskt[:, step]
        sums, counts = _masked_loss(params, xt[idx], yt[idx], m)
        per_device = sums / counts.clamp(min=1.0)  # each device's own batch mean, as in train_local
        grads = torch.autograd.grad(per_device.sum(), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.sub_(g, alpha=float(lr))
        total += sums.detach().double()
        seen += counts.double()
    with torch.no_grad():  # back to the contract's flat order: per layer, weight row-major, then bias
        out = torch.cat([p.reshape(len(sizes), -1) for p in params], dim=1).numpy()
    losses = (total / seen).numpy()
    losses[~np.all(np.isfinite(out), axis=1)] = np.nan
    return out, losses


__all__ = ["batch_schedule", "train_batched"]
