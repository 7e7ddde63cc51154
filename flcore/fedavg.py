"""Sample-weighted federated averaging over streaming sums (Σ nᵢ·deltaᵢ, never a list of updates)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flcore.quantize import chunk_count

# int8 updates are folded a block at a time: a few numpy calls per update would cost more than the arithmetic at the
# model sizes devices train, one vectorized pass per block does not. The block's float64 copy stays ≤ 8 MiB.
BLOCK_UPDATES = 64
BLOCK_FLOATS = 1 << 20


@dataclass
class WeightedSum:
    """A running Σ n·delta (``total``, float64) with its sample count ``n``, update count ``k`` and Σ n·loss.

    Updates are summed in the order they are added, int8 ones in blocks of up to ``BLOCK_UPDATES`` (fewer for large
    models) that close by count alone: reading ``total`` includes an unfinished block without closing it, so the
    float64 rounding depends only on the sequence of updates (a replayed journal sums bit for bit the same).
    """

    size: int
    n: int = 0
    k: int = 0
    loss_sum: float = 0.0
    # Σ n per parameter once a width-sliced update (flcore.hetero) came in; None while every update was whole (= n).
    cover: np.ndarray | None = field(default=None, repr=False)
    _folded: np.ndarray = field(init=False, repr=False)
    _block: list[tuple[np.ndarray, np.ndarray, int]] = field(init=False, repr=False)
    _block_chunk: int = field(init=False, default=0, repr=False)
    _block_size: int = field(init=False, default=1, repr=False)

    def __post_init__(self) -> None:
        self._folded = np.zeros(self.size, dtype=np.float64)
        self._block = []
        self._block_size = max(1, min(BLOCK_UPDATES, BLOCK_FLOATS // max(1, self.size)))

    @property
    def total(self) -> np.ndarray:
        """Σ n·delta so far (float64; treat it as read-only)."""
        return self._folded + self._block_sum() if self._block else self._folded

    @total.setter
    def total(self, value: np.ndarray) -> None:
        self._folded = np.array(value, dtype=np.float64)
        self._block = []

    def add(self, delta: np.ndarray, n: int, loss: float) -> None:
        """Fold in one device update trained on ``n`` samples."""
        self.add_sum(n * np.asarray(delta, dtype=np.float64), n, 1, loss)

    def add_quantized(self, q: np.ndarray, scales: np.ndarray, chunk: int, n: int, loss: float) -> None:
        """Fold in one int8 update as on the wire (``q`` × its chunk's scale) without a float32 delta in between;
        ``q`` and ``scales`` are read when its block closes, so they must not change afterwards (decoded ones are
        read-only views of the payload). Both must be contiguous, ``scales`` float32 as on the wire."""
        if q.shape != (self.size,) or q.dtype != np.int8 or not q.flags.c_contiguous:
            raise ValueError(f"q must be contiguous int8 of shape ({self.size},), got {q.dtype} {q.shape}")
        count = chunk_count(self.size, chunk)
        if scales.shape != (count,) or scales.dtype != np.float32 or not scales.flags.c_contiguous:
            raise ValueError(f"{self.size} values with chunk {chunk} need {count} contiguous float32 scales")
        _check_counts(n, 1)
        if self._block and chunk != self._block_chunk:
            self._close_block()
        self._block.append((q, scales, n))
        self._block_chunk = chunk
        self._count(n, 1, loss)
        if len(self._block) == self._block_size:
            self._close_block()

    def add_sum(self, weighted: np.ndarray, n: int, k: int, loss: float, cover: np.ndarray | None = None) -> None:
        """Fold in an already weighted sum (a gateway aggregate) whose samples average ``loss``; ``cover`` is its Σ n
        per parameter when some of its updates were width-sliced (None: ``n`` for every parameter)."""
        if weighted.shape != (self.size,):
            raise ValueError(f"sum has shape {weighted.shape}, expected ({self.size},)")
        _check_counts(n, k)
        if cover is not None and (cover.shape != (self.size,) or np.any(cover < 0) or np.any(cover > n)):
            raise ValueError(f"cover must hold {self.size} values in 0..n")
        if self._block:
            self._close_block()  # keeps the order of the sum the order of the updates
        self._folded += weighted
        if cover is not None:
            np.add(self._cover(), cover, out=self.cover)
        self._count(n, k, loss, whole=cover is None)

    def add_sliced(self, delta: np.ndarray, idx: np.ndarray, n: int, loss: float) -> None:
        """Fold in one update of a width-sliced sub-model: ``delta[i]`` is the change of full parameter ``idx[i]``
        (``flcore.hetero.indices``, no repeats); the other parameters were not trained by it."""
        if delta.shape != idx.shape or idx.ndim != 1:
            raise ValueError(f"delta {delta.shape} and idx {idx.shape} must be equal-length vectors")
        _check_counts(n, 1)
        if self._block:
            self._close_block()
        self._folded[idx] += n * np.asarray(delta, dtype=np.float64)
        self._cover()[idx] += n
        self._count(n, 1, loss, whole=False)

    def _cover(self) -> np.ndarray:
        if self.cover is None:
            self.cover = np.full(self.size, float(self.n))
        return self.cover

    def _count(self, n: int, k: int, loss: float, whole: bool = True) -> None:
        if whole and self.cover is not None:
            self.cover += n
        self.n += n
        self.k += k
        self.loss_sum += n * float(loss)

    def _close_block(self) -> None:
        self._folded += self._block_sum()
        self._block = []

    def _block_sum(self) -> np.ndarray:
        """Σ n·q·scale over the open block in one pass: n·scale (17 + 24 bits) times q (7 bits) is exact in float64."""
        chunk, rows = self._block_chunk, len(self._block)
        # One join of the rows' bytes (add_quantized checked they are contiguous int8 / float32) costs less than
        # np.stack of many small arrays.
        q = (
            np.frombuffer(b"".join([b[0].data for b in self._block]), dtype=np.int8)
            .astype(np.float64)
            .reshape(rows, -1)
        )
        w = (
            np.frombuffer(b"".join([b[1].data for b in self._block]), dtype=np.float32)
            .astype(np.float64)
            .reshape(rows, -1)
        )
        w *= np.array([b[2] for b in self._block], dtype=np.float64)[:, None]
        full = self.size // chunk
        out = np.empty(self.size, dtype=np.float64)
        out[: full * chunk] = np.einsum(
            "bc,bcj->cj", w[:, :full], q[:, : full * chunk].reshape(rows, full, chunk)
        ).ravel()
        if full * chunk < self.size:
            out[full * chunk :] = np.einsum("b,bj->j", w[:, full], q[:, full * chunk :])
        return out

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / self.n if self.n else float("nan")

    def mean(self) -> np.ndarray:
        """Σ n·delta / Σ n per parameter in float64 (over the devices that trained it; 0 where none did)."""
        if self.n == 0:
            raise ValueError("no updates to average")
        if self.cover is None:
            return self.total / self.n
        return np.divide(self.total, self.cover, out=np.zeros(self.size), where=self.cover > 0)

    def mean_delta(self) -> np.ndarray:
        return self.mean().astype(np.float32)


def apply(base: np.ndarray, acc: WeightedSum, server_lr: float = 1.0) -> np.ndarray:
    """The new global weights: ``base + server_lr · Σ n·delta / Σ n`` (plain FedAvg at ``server_lr=1``)."""
    if np.shape(base) != (acc.size,):
        raise ValueError(f"base has shape {np.shape(base)}, expected ({acc.size},)")
    return (np.asarray(base, dtype=np.float32) + np.float32(server_lr) * acc.mean_delta()).astype(np.float32)


def _check_counts(n: int, k: int) -> None:
    if n <= 0 or k <= 0:
        raise ValueError(f"n and k must be positive, got n={n} k={k}")
