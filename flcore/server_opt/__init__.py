"""Server optimizers (Reddi et al. 2021, "Adaptive Federated Optimization"): how the cloud turns a round's
pseudo-gradient Δ — the mean delta of the round, FedAvg's or a robust rule's — into the next global model.

One module per optimizer, each with ``SLOTS`` (the names of its moment arrays), ``init(size, params)`` (their
start values) and ``update(x, Δ, slots, params) -> (x', slots')``: ``fedavg`` (stateless, the default),
``fedavgm`` (server momentum), ``fedadam`` and ``fedyogi`` (adaptive). ``step`` applies one of them to an
``OptState`` (``to_bytes``/``from_bytes``), which the cloud stores with each model version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from flcore.server_opt import fedadam, fedavg, fedavgm, fedyogi
from flcore.server_opt.params import DEFAULT_LR, FEDAVG, OPT_NAMES, OptParams, check_name
from flcore.server_opt.state import OptState

Slots = dict[str, np.ndarray]


@dataclass(frozen=True)
class Optimizer:
    """What each optimizer module provides: its moments' names, their start values, and one step."""

    slots: tuple[str, ...]
    init: Callable[[int, OptParams], Slots]
    update: Callable[[np.ndarray, np.ndarray, Slots, OptParams], tuple[np.ndarray, Slots]]

    @classmethod
    def of(cls, module: ModuleType) -> Optimizer:
        return cls(module.SLOTS, module.init, module.update)


OPTIMIZERS: dict[str, Optimizer] = {
    FEDAVG: Optimizer.of(fedavg),
    "fedavgm": Optimizer.of(fedavgm),
    "fedadam": Optimizer.of(fedadam),
    "fedyogi": Optimizer.of(fedyogi),
}


def fresh(params: OptParams, size: int) -> OptState:
    """The state of optimizer ``params.name`` before its first round."""
    return OptState(params.name, size, 0, OPTIMIZERS[params.name].init(size, params))


def step(
    params: OptParams, x: np.ndarray, delta: np.ndarray, state: OptState | None = None
) -> tuple[np.ndarray, OptState]:
    """The new weights (float32) from ``x`` and the pseudo-gradient ``delta``, and the optimizer's next state;
    ``state`` None starts fresh, one of another optimizer or size is a ValueError."""
    size = len(x)
    if np.shape(x) != (size,) or np.shape(delta) != (size,):
        raise ValueError(f"x and delta must be flat arrays of one size, got {np.shape(x)} and {np.shape(delta)}")
    opt = OPTIMIZERS[params.name]
    state = fresh(params, size) if state is None else state.check(params.name, size)
    if set(state.slots) != set(opt.slots):
        raise ValueError(f"the {params.name} state holds slots {sorted(state.slots)}, expected {list(opt.slots)}")
    weights, slots = opt.update(
        np.asarray(x, dtype=np.float32), np.asarray(delta, dtype=np.float32), state.slots, params
    )
    return weights, OptState(params.name, size, state.step + 1, slots)


__all__ = [
    "DEFAULT_LR",
    "FEDAVG",
    "OPTIMIZERS",
    "OPT_NAMES",
    "OptParams",
    "Optimizer",
    "OptState",
    "check_name",
    "fresh",
    "step",
]
