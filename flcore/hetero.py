"""Width-sliced sub-models (HeteroFL, Diao et al. 2021): a device too small for the global MLP trains the first
``ceil(p · h)`` units of each hidden layer and uploads only those parameters.

A width ``p`` keeps the input and output layers whole and, in every hidden layer, its first units; the sub-model's
weight ``[out', in']`` is the top-left block of the full ``[out, in]`` one and its bias the first ``out'`` entries.
``indices`` lists where each sub-model parameter sits in the full flat vector (contract order, ``flcore.model``), so
slicing a global model is ``w[idx]`` and scattering a sub-model's delta back is ``full[idx] += delta``. Aggregation
then averages each parameter over the devices that trained it (``flcore.fedavg.WeightedSum.add_sliced``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from flcore.model import ModelSpec

FULL = 1.0


def check_width(width: float) -> float:
    """``width`` when it is a fraction in (0, 1], else a ValueError."""
    if isinstance(width, bool) or not isinstance(width, int | float) or not 0.0 < width <= 1.0:
        raise ValueError(f"width must be a fraction in (0, 1], got {width!r}")
    return float(width)


def sub_layers(layers: tuple[int, ...], width: float) -> tuple[int, ...]:
    """The widths of the ``width`` sub-model: hidden layers cut to ``ceil(width · h)`` units (at least one)."""
    check_width(width)
    hidden = tuple(max(1, math.ceil(width * h - 1e-9)) for h in layers[1:-1])
    return (layers[0], *hidden, layers[-1])


def sub_spec(spec: ModelSpec, width: float) -> ModelSpec:
    return ModelSpec(sub_layers(spec.layers, width))


@lru_cache(maxsize=64)
def _indices(layers: tuple[int, ...], width: float) -> np.ndarray:
    full, sub = ModelSpec(layers), ModelSpec(sub_layers(layers, width))
    parts: list[np.ndarray] = []
    for (w, (_out, fan_in), b), (_sw, (s_out, s_in), _sb) in zip(full.layout(), sub.layout(), strict=True):
        rows = np.arange(s_out, dtype=np.int64)[:, None] * fan_in + np.arange(s_in, dtype=np.int64)[None, :]
        parts.append(w.start + rows.ravel())
        parts.append(b.start + np.arange(s_out, dtype=np.int64))
    out = np.concatenate(parts)
    out.flags.writeable = False
    return out


def indices(spec: ModelSpec, width: float) -> np.ndarray:
    """Positions in the full flat vector of the ``width`` sub-model's parameters, in the sub-model's flat order
    (read-only, increasing within each layer)."""
    return _indices(spec.layers, check_width(width))


def slice_weights(spec: ModelSpec, w: np.ndarray, width: float) -> np.ndarray:
    """The ``width`` sub-model of the full flat weights ``w`` (a copy)."""
    if np.shape(w) != (spec.param_count,):
        raise ValueError(f"expected {spec.param_count} parameters, got shape {np.shape(w)}")
    return np.asarray(w)[indices(spec, width)].copy()


def width_for(widths: dict[str, float] | None, ram_class: str) -> float:
    """The width a device of ``ram_class`` trains at under a task's ``widths`` (the full model when unnamed)."""
    return FULL if not widths else float(widths.get(ram_class, FULL))


__all__ = ["FULL", "check_width", "indices", "slice_weights", "sub_layers", "sub_spec", "width_for"]
