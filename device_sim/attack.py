"""Poisoning attackers for robustness experiments (``iotfl fleet --attack KIND:PCT``, ``iotfl demo --attack``).

``round(PCT × devices)`` devices, drawn from the seed among those whose RAM class can train the dataset's model
(an attacker that never trains would attack nothing), send poisoned updates:

- ``sign-flip``: ``−4 × delta`` (the honest direction reversed and boosted, so 20 % of attackers cancel the other
  80 %'s progress under plain FedAvg instead of merely slowing it);
- ``scale10``: a boosted malicious update, model-replacement style (Bagdasaryan et al. 2020, Bhagoji et al. 2019):
  the attacker trains on flipped labels ``y → C − 1 − y`` and sends ``10 × delta``, so under plain FedAvg 20 % of
  attackers outweigh the other 80 % (10 × an honest delta is no attack: it acts like a larger server step);
- ``label-flip``: an honest update trained on labels mapped ``y → C − 1 − y``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

KINDS = ("sign-flip", "scale10", "label-flip")
FLIPS_LABELS = ("scale10", "label-flip")
SIGN_FLIP_BOOST = 4.0
SCALE = 10.0
_SPEC = re.compile(r"(?P<kind>[a-z0-9-]+):(?P<pct>\d+(?:\.\d*)?|\.\d+)(?P<percent>%?)")


@dataclass(frozen=True)
class Attack:
    """``fraction`` of the fleet (0..1) attacking with ``kind``."""

    kind: str
    fraction: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.fraction * 100:g}%"

    def count(self, devices: int) -> int:
        """How many of ``devices`` attack."""
        return math.floor(self.fraction * devices + 0.5)

    def choose(self, candidates: Sequence[str], devices: int, seed: int) -> set[str]:
        """The attackers: ``count(devices)`` of ``candidates`` (capped at all of them), drawn from ``seed``."""
        rng = np.random.default_rng([seed, 3])
        picked = rng.permutation(len(candidates))[: min(self.count(devices), len(candidates))]
        return {candidates[int(i)] for i in picked}

    def poison(self, delta: np.ndarray) -> np.ndarray:
        """What an attacker sends instead of the ``delta`` it trained (label-flip poisons the data, not the delta)."""
        if self.kind == "sign-flip":
            return (-SIGN_FLIP_BOOST * delta).astype(np.float32)
        if self.kind == "scale10":
            return (SCALE * delta).astype(np.float32)
        return delta

    def labels(self, y: np.ndarray, classes: int) -> np.ndarray:
        """The labels an attacker trains on: flipped ``y → C − 1 − y`` for label-flip and scale10, else ``y``."""
        return (classes - 1 - y).astype(y.dtype) if self.kind in FLIPS_LABELS else y


def parse_attack(spec: str) -> Attack:
    """``KIND:PCT`` (``sign-flip:20%``, ``scale10:0.1``) as an ``Attack``; a ValueError says what is wrong."""
    match = _SPEC.fullmatch(spec.strip())
    if match is None or match["kind"] not in KINDS:
        raise ValueError(f"attack {spec!r} must be KIND:PCT with KIND one of {', '.join(KINDS)}, e.g. sign-flip:20%")
    value = float(match["pct"])
    fraction = value / 100 if match["percent"] else value
    if not 0 < fraction <= 1:
        raise ValueError(f"attack {spec!r}: the share of attackers must be in (0, 100%], e.g. 20% or 0.2")
    return Attack(match["kind"], fraction)


__all__ = ["FLIPS_LABELS", "KINDS", "SCALE", "SIGN_FLIP_BOOST", "Attack", "parse_attack"]
