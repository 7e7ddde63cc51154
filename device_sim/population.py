"""Who is in a simulated fleet: ids, gateways, data shards, RAM classes, initial charges, radio strength.

A pure function of the settings and the training labels, so the same seed always builds the same fleet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from device_sim.settings import FleetSettings
from flcore.partition import dirichlet
from flcore.resources import RAM_CLASSES


@dataclass(frozen=True, eq=False)
class DeviceProfile:
    """One device's fixed traits; ``indices`` select its shard of the training split."""

    dev: str
    gw: str
    indices: np.ndarray
    ram_class: str
    battery: float
    rssi: int


def device_id(i: int) -> str:
    return f"d{i:04d}"


def gateway_id(i: int, gateways: int) -> str:
    return f"gw{i % gateways}"


def ram_classes(count: int, mix: dict[str, float], rng: np.random.Generator) -> list[str]:
    """``count`` RAM classes in the proportions of ``mix`` (largest remainder, so 4 % of 50 is exactly 2), shuffled."""
    names = list(mix)
    shares = np.array([mix[k] for k in names], dtype=np.float64)
    shares /= shares.sum()
    raw = shares * count
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: count - int(counts.sum())]:
        counts[i] += 1
    classes = [name for name, c in zip(names, counts, strict=True) for _ in range(c)]
    return [str(c) for c in rng.permutation(np.array(classes, dtype=object))]


def by_dominant_label(classes: list[str], shards: list[np.ndarray], y: np.ndarray) -> list[str]:
    """The same RAM classes handed out in the order of each shard's most common label (ties by device index), the
    smallest class first: the devices that mostly see label 0 get the least RAM."""
    labels = int(y.max()) + 1 if len(y) else 1
    dominant = [int(np.bincount(y[s], minlength=labels).argmax()) if len(s) else labels for s in shards]
    ranked = sorted(classes, key=lambda c: RAM_CLASSES[c])
    out = [""] * len(classes)
    for rank, device in enumerate(np.argsort(dominant, kind="stable")):
        out[int(device)] = ranked[rank]
    return out


def build_population(settings: FleetSettings, y_train: np.ndarray) -> list[DeviceProfile]:
    """Device ``i`` is ``d{i:04d}`` on gateway ``gw{i % G}`` with a Dirichlet(α) shard of ``y_train``."""
    n = settings.devices
    shards = dirichlet(y_train, n, settings.alpha, np.random.default_rng(settings.seed))
    # Separate streams, so changing the RAM mix does not reshuffle the charges or the data.
    classes = ram_classes(n, settings.ram_mix, np.random.default_rng([settings.seed, 1]))
    if settings.ram_follows_data:
        classes = by_dominant_label(classes, shards, y_train)
    traits = np.random.default_rng([settings.seed, 2])
    lo, hi = settings.battery_start
    charges = traits.uniform(lo, hi, size=n) if settings.battery else np.ones(n)
    rssi = traits.integers(-90, -40, size=n, endpoint=True)
    return [
        DeviceProfile(
            device_id(i), gateway_id(i, settings.gateways), shards[i], classes[i], float(charges[i]), int(rssi[i])
        )
        for i in range(n)
    ]


__all__ = ["DeviceProfile", "build_population", "by_dominant_label", "device_id", "gateway_id", "ram_classes"]
