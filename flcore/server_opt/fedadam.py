"""FedAdam (Reddi et al. 2021): m ← β1·m + (1−β1)·Δ; v ← β2·v + (1−β2)·Δ²; x ← x + η·m / (√v + τ).

The moments start at m = 0 and v = τ² (the paper's v₋₁ ≥ τ²: no division by a bare zero), without bias correction
(the paper's Algorithm 2): at the default β1 = 0.9, β2 = 0.99 the first round steps about η·sign(Δ) per coordinate,
whatever Δ's size, which is why the adaptive defaults keep η small."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flcore.server_opt.params import OptParams

SLOTS = ("m", "v")

SecondMoment = Callable[[np.ndarray, np.ndarray, OptParams], np.ndarray]


def init(size: int, p: OptParams) -> dict[str, np.ndarray]:
    return {"m": np.zeros(size, dtype=np.float32), "v": np.full(size, p.eps * p.eps, dtype=np.float32)}


def second_moment(v: np.ndarray, d2: np.ndarray, p: OptParams) -> np.ndarray:
    """Adam's v: an exponential average of Δ²."""
    return p.beta2 * v + (1.0 - p.beta2) * d2


def adaptive_update(
    x: np.ndarray, delta: np.ndarray, slots: dict[str, np.ndarray], p: OptParams, second: SecondMoment
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The step FedAdam and FedYogi share; they differ only in ``second`` (v from v and Δ²)."""
    d = np.asarray(delta, dtype=np.float64)
    m = p.momentum * slots["m"].astype(np.float64) + (1.0 - p.momentum) * d
    v = second(slots["v"].astype(np.float64), d * d, p)
    step = p.eta * m / (np.sqrt(v) + p.eps)
    return (x + step).astype(np.float32), {"m": m.astype(np.float32), "v": v.astype(np.float32)}


def update(
    x: np.ndarray, delta: np.ndarray, slots: dict[str, np.ndarray], p: OptParams
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return adaptive_update(x, delta, slots, p, second_moment)
