"""Personalization, the pure part: which flat parameters are the head, a head spliced into a global vector, a
device's deterministic local train / held-out split, and the sums of local accuracies a gateway reports.

The head is the last layer (its weight, then its bias): in the contract's flat order it is the vector's tail, so a
personal model is the global body followed by the device's own head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flcore.model import ModelSpec

HELD_OUT = 0.2  # share of a device's samples it keeps for evaluation and never trains on


def head_slice(spec: ModelSpec) -> slice:
    """The flat parameters of the last layer (weight ``[classes, h]`` row-major, then bias ``[classes]``)."""
    weight, _shape, bias = spec.layout()[-1]
    return slice(weight.start, bias.stop)


def splice_head(spec: ModelSpec, w: np.ndarray, head: np.ndarray) -> np.ndarray:
    """A float32 copy of the flat weights ``w`` whose head is ``head``."""
    out = np.array(w, dtype=np.float32, copy=True)
    cut = head_slice(spec)
    if out.shape != (spec.param_count,) or np.shape(head) != (cut.stop - cut.start,):
        raise ValueError(f"need {spec.param_count} weights and a head of {cut.stop - cut.start}")
    out[cut] = head
    return out


def features(spec: ModelSpec, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """What the head sees: the body's activations (after the last ReLU; the input itself for a one-layer model)."""
    h = np.asarray(x, dtype=np.float32)
    for weight, bias in spec.unflatten(np.asarray(w, dtype=np.float32))[:-1]:
        h = np.maximum(h @ weight.T + bias, 0.0)
    return h


def local_split(n: int, seed: int, held_out: float = HELD_OUT) -> tuple[np.ndarray, np.ndarray]:
    """A device's ``n`` sample positions cut into (train, held-out), the same for the same ``seed``: ``held_out``
    of them, at least one, kept out when ``n`` ≥ 2 (a one-sample device trains on it and evaluates nothing)."""
    if n < 1 or not 0.0 < held_out < 1.0:
        raise ValueError(f"need n >= 1 and held_out in (0, 1), got n={n}, held_out={held_out}")
    order = np.random.default_rng(seed).permutation(n)
    kept = 0 if n < 2 else min(n - 1, max(1, int(round(held_out * n))))
    return np.sort(order[kept:]), np.sort(order[:kept])


@dataclass(frozen=True)
class Pers:
    """Sums of local held-out accuracies over ``c`` devices: ``p`` of their personal models, ``g`` of the global
    model they trained from (the ``agg`` field ``pers``)."""

    p: float = 0.0
    g: float = 0.0
    c: int = 0

    def __add__(self, other: Pers) -> Pers:
        return Pers(self.p + other.p, self.g + other.g, self.c + other.c)

    def means(self) -> tuple[float, float] | None:
        """Mean personalized and global accuracy, None over no device."""
        return (self.p / self.c, self.g / self.c) if self.c else None


__all__ = ["HELD_OUT", "Pers", "features", "head_slice", "local_split", "splice_head"]
