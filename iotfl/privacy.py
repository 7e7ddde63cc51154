"""Privacy accounting of a run with client-side DP (``flcore.privacy``): ε at δ by dp-accounting's RDP accountant.

Each update a device sends is one Gaussian mechanism with sensitivity ``clip`` and noise multiplier z. The gateway
sees who sent it (the topic names the device, and battery status is public), so being left out of a round hides
nothing and subsampling amplifies nothing: the accountant composes the releases with sampling rate q = 1, the
conservative bound. ``epsilon`` is for the add/remove relation (the device's data vs. no data, the DP-FedAvg
convention); ``epsilon_replace`` for two arbitrary datasets of the same device, whose clipped deltas can differ by
2·clip, i.e. noise multiplier z/2. gateway/ and cloud/ never import this; dp-accounting is imported on first use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# q = 1: participation is visible to the gateway (see the module docstring).
SAMPLING_RATE = 1.0


def epsilon(noise_multiplier: float, steps: int, delta: float, sampling_rate: float = SAMPLING_RATE) -> float:
    """ε at ``delta`` of ``steps`` Poisson-subsampled Gaussian releases (std = noise_multiplier × sensitivity)."""
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate!r}")
    if steps == 0:
        return 0.0
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    release = dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier))
    accountant = RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(release, steps))
    return float(accountant.get_epsilon(delta))


def releases(per_device: Iterable[dict[str, Any]]) -> int:
    """The most updates any one device sent (its re-sends repeat the same bytes, so they release nothing new)."""
    return max((int(d.get("trainings", 0)) for d in per_device), default=0)


def privacy_section(clip: float, noise_multiplier: float, delta: float, rounds: int, steps: int) -> dict[str, Any]:
    """The report's ``privacy`` section for a run whose most active device sent ``steps`` updates in ``rounds``."""
    return {
        "epsilon": epsilon(noise_multiplier, steps, delta),
        "epsilon_replace": epsilon(noise_multiplier / 2, steps, delta),
        "delta": delta,
        "noise_multiplier": noise_multiplier,
        "clip": clip,
        "rounds": rounds,
        "releases": steps,
        "sampling_rate": SAMPLING_RATE,
    }


__all__ = ["SAMPLING_RATE", "epsilon", "privacy_section", "releases"]
