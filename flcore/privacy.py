"""Client-side differential privacy: clip a device's model delta to an L2 norm and add Gaussian noise.

This is the Gaussian mechanism of DP-FedAvg applied on the device itself (user-level local DP): the delta is scaled
down to norm ≤ ``clip`` (so one device's data moves the release by at most ``clip``), then every coordinate gets
independent N(0, (noise_multiplier · clip)²) noise. What ε that buys over a run is the accountant's business
(``iotfl.privacy``); this module only does the arithmetic, from a generator the caller owns.
"""

from __future__ import annotations

import math

import numpy as np


def clip_and_noise(
    delta: np.ndarray, clip: float, noise_multiplier: float, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """The clipped, noised float32 ``delta`` and its L2 norm before clipping.

    ``noise_multiplier`` z gives per-coordinate noise std z·``clip``; z = 0 clips only.
    """
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a finite number > 0, got {clip!r}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier!r}")
    x = np.asarray(delta, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"delta must be a flat vector, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("delta has non-finite values")
    norm = float(np.linalg.norm(x))
    if norm > clip:
        x = x * (clip / norm)
    if noise_multiplier > 0:
        x = x + rng.normal(0.0, noise_multiplier * clip, size=x.shape)
    return x.astype(np.float32), norm


__all__ = ["clip_and_noise"]
