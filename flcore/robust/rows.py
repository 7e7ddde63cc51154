"""The updates of one aggregation held compactly for the robust rules: int8 ``q`` + per-chunk scales per row.

A gateway's k device updates cost k × P bytes here (plus their scales), never a k × P float matrix: the rules read
them through ``blocks()``, which dequantizes a few columns of every row at a time (at most ``max_floats`` float64
values live at once). The cloud's few gateway means go in as float32 rows through the same interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from flcore.quantize import chunk_count

# Floats one block may hold (8 MiB of float64): with k rows a block spans max(1, BLOCK_FLOATS // k) columns.
BLOCK_FLOATS = 1 << 20


@dataclass(frozen=True, eq=False)
class Robust:
    """A rule's result: the mean delta (float64, length P) and which rows contributed to it."""

    delta: np.ndarray
    kept: np.ndarray


@dataclass(frozen=True, eq=False)
class _Row:
    values: np.ndarray  # int8 q, or float32 for an already dequantized row
    scales: np.ndarray  # float32 per chunk
    chunk: int
    factor: float  # a multiplier on the whole row: the staleness weight of an async update


class Rows:
    """The rows of one aggregation: ``add`` int8 updates (or ``add_float`` float rows), then hand to a rule."""

    def __init__(self, size: int, max_floats: int = BLOCK_FLOATS) -> None:
        if size < 1 or max_floats < 1:
            raise ValueError(f"rows need a positive length and block size, got {size} and {max_floats}")
        self.size = size
        self.max_floats = max_floats
        self._rows: list[_Row] = []
        self._n: list[int] = []

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def n(self) -> np.ndarray:
        """Each row's sample count, as the device declared it (already capped by the gateway's max_samples)."""
        return np.asarray(self._n, dtype=np.float64)

    @property
    def nbytes(self) -> int:
        """Bytes held by the rows' values and scales."""
        return sum(r.values.nbytes + r.scales.nbytes for r in self._rows)

    def dtypes(self) -> set[np.dtype]:
        return {r.values.dtype for r in self._rows}

    def add(self, q: np.ndarray, scales: np.ndarray, chunk: int, n: int, factor: float = 1.0) -> None:
        """One int8 update as on the wire (``q`` × its chunk's scale), from ``n`` samples, times ``factor``."""
        q = np.asarray(q)
        if q.dtype != np.int8 or q.shape != (self.size,):
            raise ValueError(f"q must be int8 of shape ({self.size},), got {q.dtype} {q.shape}")
        scales = np.asarray(scales, dtype=np.float32)
        if chunk < 1 or scales.shape != (chunk_count(self.size, chunk),):
            raise ValueError(f"{self.size} values with chunk {chunk} need {chunk_count(self.size, chunk)} scales")
        self._append(_Row(q, scales, chunk, float(factor)), n)

    def add_float(self, x: np.ndarray, n: int, factor: float = 1.0) -> None:
        """One float row (a gateway's mean delta at the cloud), stored as float32."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape != (self.size,):
            raise ValueError(f"a row must have shape ({self.size},), got {x.shape}")
        self._append(_Row(x, np.ones(1, dtype=np.float32), self.size, float(factor)), n)

    def _append(self, row: _Row, n: int) -> None:
        if n <= 0 or not np.isfinite(row.factor):
            raise ValueError(f"a row needs n > 0 and a finite factor, got n={n} factor={row.factor}")
        self._rows.append(row)
        self._n.append(int(n))

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """``(columns, k × width float64 block)`` over the columns in order; a block holds ≤ ``max_floats`` values
        (at least one column)."""
        k = len(self._rows)
        if k == 0:
            return
        width = max(1, self.max_floats // k)
        for start in range(0, self.size, width):
            cols = slice(start, min(start + width, self.size))
            index = np.arange(cols.start, cols.stop)
            block = np.empty((k, cols.stop - cols.start), dtype=np.float64)
            for i, r in enumerate(self._rows):
                block[i] = r.values[cols].astype(np.float64) * r.scales[index // r.chunk] * r.factor
            yield cols, block

    def norms(self) -> np.ndarray:
        """Each row's L2 norm."""
        squares = np.zeros(len(self._rows), dtype=np.float64)
        for _, block in self.blocks():
            squares += np.einsum("ij,ij->i", block, block)
        return np.sqrt(squares)

    def weighted_sum(self, weights: np.ndarray) -> np.ndarray:
        """``Σ wᵢ·rowᵢ``."""
        out = np.zeros(self.size, dtype=np.float64)
        for cols, block in self.blocks():
            out[cols] = weights @ block
        return out

    def gram(self) -> np.ndarray:
        """The k × k matrix of the rows' dot products."""
        k = len(self._rows)
        out = np.zeros((k, k), dtype=np.float64)
        for _, block in self.blocks():
            out += block @ block.T
        return out

    def columnwise(self, reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``reduce(block) -> per-column values`` applied block by block (the coordinate-wise rules)."""
        out = np.zeros(self.size, dtype=np.float64)
        for cols, block in self.blocks():
            out[cols] = reduce(block)
        return out


def capped_n(n: np.ndarray, n_cap: float) -> np.ndarray:
    """Sample counts capped at ``n_cap × median n``: a device cannot buy weight by declaring a huge ``n``."""
    return np.minimum(n, n_cap * float(np.median(n)))


__all__ = ["BLOCK_FLOATS", "Robust", "Rows", "capped_n"]
