"""Non-IID partitioning of a labelled set across devices with a Dirichlet(α) label skew."""

from __future__ import annotations

import numpy as np


def dirichlet(
    labels: np.ndarray, parts: int, alpha: float, rng: np.random.Generator, min_size: int = 2
) -> list[np.ndarray]:
    """Indices of ``labels`` for each of ``parts`` devices; small α skews labels, large α tends to IID.

    Every device gets at least ``min_size`` samples (redrawing a few times, then topping up from the largest
    parts), so no device is left with nothing to train on. When there are fewer than ``parts × min_size`` samples
    (10,000 devices on the 1,437 digits), the labels are split as if repeated just enough times: devices then share
    samples (index ``i`` and its copies ``i + k·len(labels)`` map back to sample ``i``; a device may hold a sample
    twice).
    """
    labels = np.asarray(labels)
    if parts < 1:
        raise ValueError("parts must be >= 1")
    if alpha <= 0:
        raise ValueError("alpha must be > 0")
    if len(labels) == 0:
        raise ValueError("no samples to partition")
    copies = -(-parts * min_size // len(labels))
    if copies > 1:
        return [np.sort(s % len(labels)) for s in dirichlet(np.tile(labels, copies), parts, alpha, rng, min_size)]
    classes = np.unique(labels)
    for _attempt in range(20):
        buckets: list[list[int]] = [[] for _ in range(parts)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for part, chunk in enumerate(np.split(idx, cuts)):
                buckets[part].extend(chunk.tolist())
        if min(len(b) for b in buckets) >= min_size:
            break
    for b in buckets:
        while len(b) < min_size:
            donor = max(buckets, key=len)
            b.append(donor.pop())
    return [np.array(sorted(rng.permutation(b)), dtype=np.int64) for b in buckets]
