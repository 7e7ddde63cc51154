"""Non-IID partitioning of a labelled set across devices with a Dirichlet(α) label skew."""

from __future__ import annotations

import heapq

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
        # Position j of class c's shuffled indices goes to the part whose cut range holds j (as np.split would).
        picked, owners = [], []
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            picked.append(idx)
            owners.append(np.searchsorted(cuts, np.arange(len(idx)), side="right"))
        owner = np.concatenate(owners)
        sizes = np.bincount(owner, minlength=parts)
        if sizes.min() >= min_size:
            break
    # Each part's indices in arrival order (class by class), so the top-up below takes the same last elements.
    ordered = np.concatenate(picked)[np.argsort(owner, kind="stable")]
    buckets = [chunk.tolist() for chunk in np.split(ordered, np.cumsum(sizes)[:-1])]
    _top_up(buckets, min_size)
    return [np.array(sorted(rng.permutation(b)), dtype=np.int64) for b in buckets]


def _top_up(buckets: list[list[int]], min_size: int) -> None:
    """Move the last index of the largest part (the first such part on a tie) to each part below ``min_size``."""
    heap = [(-len(b), i) for i, b in enumerate(buckets)]
    heapq.heapify(heap)
    for i, b in enumerate(buckets):
        while len(b) < min_size:
            size, d = heapq.heappop(heap)
            if -size != len(buckets[d]):
                continue  # a stale entry: that part changed size since
            b.append(buckets[d].pop())
            heapq.heappush(heap, (-len(buckets[d]), d))
            heapq.heappush(heap, (-len(b), i))
