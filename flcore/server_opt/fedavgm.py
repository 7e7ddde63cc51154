"""FedAvgM (server momentum, Hsu et al. 2019): m ← β·m + Δ; x ← x + η·m."""

from __future__ import annotations

import numpy as np

from flcore.server_opt.params import OptParams

SLOTS = ("m",)


def init(size: int, p: OptParams) -> dict[str, np.ndarray]:
    return {"m": np.zeros(size, dtype=np.float32)}


def update(
    x: np.ndarray, delta: np.ndarray, slots: dict[str, np.ndarray], p: OptParams
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    m = p.beta * slots["m"].astype(np.float64) + delta
    return (x + p.eta * m).astype(np.float32), {"m": m.astype(np.float32)}
