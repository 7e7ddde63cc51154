"""Local training of the contract's MLP with torch on the CPU: one device's SGD epochs, and the pooled baseline.

The parameters live in ONE flat float32 tensor and every layer's weight and bias are views into it, so the flat
order of the contract (per layer: weight ``[out, in]`` row-major, then bias ``[out]``) holds by construction and
no copying between a model object and the wire vector is needed.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
import torch.nn.functional as F

from flcore.datasets import Dataset
from flcore.model import ModelSpec

_configured = threading.Lock()
_done = False


def configure_threads() -> None:
    """One intra-op thread: many tiny models share 2 cores, and torch's own thread pool only adds contention."""
    global _done
    with _configured:
        if not _done:
            torch.set_num_threads(1)
            _done = True


def _layers(spec: ModelSpec, theta: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(theta[w].view(shape), theta[b]) for w, shape, b in spec.layout()]


def forward(spec: ModelSpec, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Logits of the MLP (ReLU between layers) whose flat parameters are ``theta``."""
    layers = _layers(spec, theta)
    h = x
    for i, (w, b) in enumerate(layers):
        h = F.linear(h, w, b)
        if i < len(layers) - 1:
            h = F.relu(h)
    return h


def _sgd(
    spec: ModelSpec, w: np.ndarray, x: np.ndarray, y: np.ndarray, lr: float, epochs: int, batch: int, seed: int
) -> tuple[np.ndarray, float]:
    configure_threads()
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"need one label per sample and at least one sample, got {len(x)} and {len(y)}")
    if batch < 1 or epochs < 0:
        raise ValueError(f"batch must be >= 1 and epochs >= 0, got batch={batch} epochs={epochs}")
    flat = np.array(w, dtype=np.float32, copy=True)
    if flat.shape != (spec.param_count,):
        raise ValueError(f"expected {spec.param_count} parameters, got shape {flat.shape}")
    theta = torch.from_numpy(flat).requires_grad_(True)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    rng = np.random.default_rng(seed)
    total, seen = 0.0, 0
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            loss = F.cross_entropy(forward(spec, theta, xt[idx]), yt[idx])
            (grad,) = torch.autograd.grad(loss, theta)
            with torch.no_grad():  # plain SGD; torch.optim adds overhead that dominates at this model size
                theta.sub_(grad, alpha=float(lr))
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
    if seen == 0:  # zero epochs: report the loss of the unchanged model
        with torch.no_grad():
            return flat, float(F.cross_entropy(forward(spec, theta, xt), yt))
    out = theta.detach().numpy().astype(np.float32, copy=True)
    if not np.all(np.isfinite(out)):
        raise ArithmeticError("local training diverged (non-finite weights); lower the learning rate")
    return out, total / seen


def train_local(
    spec: ModelSpec, w: np.ndarray, x: np.ndarray, y: np.ndarray, lr: float, epochs: int, batch: int, seed: int
) -> tuple[np.ndarray, float]:
    """SGD from flat weights ``w`` on ``(x, y)``: the new flat float32 weights and the mean training loss.

    Mini-batches are reshuffled every epoch from ``seed``, so a call is reproducible.
    """
    return _sgd(spec, w, x, y, lr, epochs, batch, seed)


def train_centralized(dataset: Dataset, epochs: int = 40, lr: float = 0.1, batch: int = 32, seed: int = 0) -> float:
    """Test accuracy of the same MLP trained on the pooled training split: the federated run's baseline."""
    spec = ModelSpec(dataset.layers)
    w, _ = _sgd(spec, spec.init(seed), dataset.x_train, dataset.y_train, lr, epochs, batch, seed)
    accuracy, _ = spec.evaluate(w, dataset.x_test, dataset.y_test)
    return accuracy


__all__ = ["configure_threads", "forward", "train_centralized", "train_local"]
