"""FedYogi (Reddi et al. 2021): FedAdam with v ← v − (1−β2)·Δ²·sign(v − Δ²), so v grows no faster than Δ² does
and shrinks additively: a burst of large deltas does not wipe out the memory of earlier small ones."""

from __future__ import annotations

import numpy as np

from flcore.server_opt.fedadam import SLOTS, adaptive_update, init
from flcore.server_opt.params import OptParams


def second_moment(v: np.ndarray, d2: np.ndarray, p: OptParams) -> np.ndarray:
    """Yogi's v: moves by (1−β2)·Δ² towards Δ²."""
    return v - (1.0 - p.beta2) * d2 * np.sign(v - d2)


def update(
    x: np.ndarray, delta: np.ndarray, slots: dict[str, np.ndarray], p: OptParams
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return adaptive_update(x, delta, slots, p, second_moment)


__all__ = ["SLOTS", "init", "second_moment", "update"]
