"""MLP model spec, the contract's flat parameter order, and a numpy forward pass.

Flat order: for each layer i of ``layers=[in, h1, ..., out]``, weight ``[out, in]`` row-major, then bias ``[out]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_LAYER_WIDTH = 4096
MAX_DEPTH = 8


@dataclass(frozen=True)
class ModelSpec:
    """An MLP with ReLU between layers; ``layers`` lists the widths from input to output."""

    layers: tuple[int, ...]

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if not 2 <= len(layers) <= MAX_DEPTH + 1:
            raise ValueError(f"layers must list 2..{MAX_DEPTH + 1} widths, got {len(layers)}")
        for width in layers:
            if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_LAYER_WIDTH:
                raise ValueError(f"each layer width must be an int in 1..{MAX_LAYER_WIDTH}, got {width!r}")
        object.__setattr__(self, "layers", layers)

    @property
    def param_count(self) -> int:
        return sum(o * i + o for i, o in zip(self.layers, self.layers[1:], strict=False))

    @property
    def n_classes(self) -> int:
        return self.layers[-1]

    def layout(self) -> list[tuple[slice, tuple[int, int], slice]]:
        """Per layer: the weight's slice of the flat vector, its shape ``(out, in)``, and the bias's slice."""
        out: list[tuple[slice, tuple[int, int], slice]] = []
        pos = 0
        for fan_in, fan_out in zip(self.layers, self.layers[1:], strict=False):
            w = slice(pos, pos + fan_in * fan_out)
            b = slice(w.stop, w.stop + fan_out)
            out.append((w, (fan_out, fan_in), b))
            pos = b.stop
        return out

    def unflatten(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views ``(weight [out, in], bias [out])`` per layer into a flat parameter vector."""
        if flat.shape != (self.param_count,):
            raise ValueError(f"expected {self.param_count} parameters, got shape {flat.shape}")
        return [(flat[w].reshape(shape), flat[b]) for w, shape, b in self.layout()]

    def init(self, seed: int) -> np.ndarray:
        """He-uniform weights and zero biases, float32, reproducible from ``seed``."""
        rng = np.random.default_rng(seed)
        flat = np.zeros(self.param_count, dtype=np.float32)
        for w, _b in self.unflatten(flat):
            bound = np.sqrt(6.0 / w.shape[1])
            w[...] = rng.uniform(-bound, bound, size=w.shape)
        return flat

    def logits(self, flat: np.ndarray, x: np.ndarray) -> np.ndarray:
        h = np.asarray(x, dtype=np.float32)
        params = self.unflatten(np.asarray(flat, dtype=np.float32))
        for i, (w, b) in enumerate(params):
            h = h @ w.T + b
            if i < len(params) - 1:
                h = np.maximum(h, 0.0)
        return h

    def evaluate(self, flat: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """Accuracy (fraction) and mean cross-entropy loss on ``(x, y)``."""
        if len(y) == 0:
            raise ValueError("cannot evaluate on an empty set")
        z = self.logits(flat, x).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        y = np.asarray(y, dtype=np.int64)
        loss = float(-log_p[np.arange(len(y)), y].mean())
        accuracy = float((z.argmax(axis=1) == y).mean())
        return accuracy, loss

    def footprint_bytes(self, batch: int = 1) -> int:
        """Training memory estimate: float32 parameters, their gradients and one batch of activations."""
        activations = batch * sum(self.layers) * 2  # forward values and their gradients
        return 4 * (2 * self.param_count + activations)
