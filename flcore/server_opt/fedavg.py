"""FedAvg as a server optimizer: x ← x + η·Δ, stateless (at η = 1 exactly ``flcore.fedavg.apply``)."""

from __future__ import annotations

import numpy as np

from flcore.server_opt.params import OptParams

SLOTS: tuple[str, ...] = ()


def init(size: int, p: OptParams) -> dict[str, np.ndarray]:
    return {}


def update(
    x: np.ndarray, delta: np.ndarray, slots: dict[str, np.ndarray], p: OptParams
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    # The same float32 arithmetic as flcore.fedavg.apply, so the default cloud keeps its numbers bit for bit.
    return (np.asarray(x, dtype=np.float32) + np.float32(p.eta) * delta).astype(np.float32), {}
