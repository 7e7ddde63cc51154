"""The ``topk`` encoding: the k largest-magnitude values of a delta (k = ceil(fraction · P)), with error feedback.

On the wire: ``idx`` = the k indices as little-endian uint32, strictly increasing; ``q`` = their values quantized
per chunk of ``chunk`` consecutive *kept* values (``flcore.quantize``, int8), ``scales`` = one float32 per such
chunk. Every other value is 0. Ties in magnitude keep the lower index.

Error feedback (the sender's side): a device adds the residual it kept from its previous update to its new delta
before selecting, and keeps as its next residual what it did not send (``target − sent``), so over rounds nothing
is dropped, only delayed: Σ sent + last residual = Σ deltas.
"""

from __future__ import annotations

import math

import numpy as np

from flcore.errors import WireError
from flcore.quantize import dequantize, quantize

IDX_BYTES = 4


def kept(size: int, fraction: float) -> int:
    """k for ``size`` values: ``ceil(fraction · size)``, at least 1, at most ``size``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"the top-k fraction must be in (0, 1], got {fraction}")
    return min(size, max(1, math.ceil(fraction * size)))


def sparsify(x: np.ndarray, fraction: float, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(idx uint32[k] increasing, scales float32[ceil(k/chunk)], q int8[k])`` of the k largest |x|."""
    x = np.asarray(x, dtype=np.float32).ravel()
    k = kept(x.size, fraction)
    # a stable sort of -|x| keeps the lower index among equal magnitudes
    idx = np.sort(np.argsort(-np.abs(x), kind="stable")[:k]).astype(np.uint32)
    scales, q = quantize(x[idx], chunk)
    return idx, scales, q


def densify(idx: np.ndarray, q: np.ndarray, scales: np.ndarray, chunk: int, size: int) -> np.ndarray:
    """The float32 delta of length ``size``: dequantized values at ``idx``, 0 elsewhere."""
    out = np.zeros(size, dtype=np.float32)
    out[np.asarray(idx, dtype=np.int64)] = dequantize(q, scales, chunk)
    return out


def with_feedback(
    delta: np.ndarray, residual: np.ndarray | None, fraction: float, chunk: int
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Sparsify ``delta + residual``; returns ``((idx, scales, q), next residual)``. A residual of another length
    (the model changed) is dropped."""
    target = np.asarray(delta, dtype=np.float32).ravel()
    if residual is not None and residual.shape == target.shape:
        target = (target + residual).astype(np.float32)
    idx, scales, q = sparsify(target, fraction, chunk)
    return (idx, scales, q), (target - densify(idx, q, scales, chunk, target.size)).astype(np.float32)


def idx_bytes(idx: np.ndarray) -> bytes:
    return np.asarray(idx, dtype="<u4").tobytes()


def parse_idx(data: bytes, size: int) -> np.ndarray:
    """The indices of ``idx`` bytes for a model of ``size`` values; ``WireError`` when they are not 1..size
    strictly increasing indices below ``size``."""
    if len(data) % IDX_BYTES or not IDX_BYTES <= len(data) <= IDX_BYTES * size:
        raise WireError("length", f"idx has {len(data)} bytes: 1..{size} uint32 indices expected")
    idx = np.frombuffer(data, dtype="<u4").astype(np.int64)
    if idx[-1] >= size or np.any(np.diff(idx) <= 0):
        raise WireError("schema", f"idx must be strictly increasing indices below {size}")
    return idx.astype(np.uint32)


__all__ = ["IDX_BYTES", "densify", "idx_bytes", "kept", "parse_idx", "sparsify", "with_feedback"]
