"""Per-chunk symmetric int8 quantization of a float32 vector (the contract's `scales` + `q`).

Deterministic mode is the reference every sender must reproduce byte for byte, so it is spelled out in float32:
``scale = float32(max|x|) / float32(127)``; ``q = clamp(round_half_away(x / scale), -127, 127)`` (``qmax`` = 7
instead of 127 for the 4-bit encoding, ``flcore.encodings.int4``); a chunk whose
``max|x|`` is 0 has scale 0 and all-zero ``q``. Stochastic mode rounds ``x / scale`` up with probability equal to
its fractional part, which makes the dequantized value unbiased.
"""

from __future__ import annotations

import numpy as np

QMAX = 127
MAX_CHUNK = 65536
# The fleet's default chunk (the cloud's `chunk` setting): 4 bytes of scale per 256 values.
DEFAULT_CHUNK = 256


def chunk_count(size: int, chunk: int) -> int:
    return -(-size // chunk)


def _check_chunk(chunk: int) -> None:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= MAX_CHUNK:
        raise ValueError(f"chunk must be an int in 1..{MAX_CHUNK}, got {chunk!r}")


def _padded(x: np.ndarray, chunk: int) -> np.ndarray:
    n = chunk_count(x.size, chunk)
    out = np.zeros(n * chunk, dtype=np.float32)
    out[: x.size] = x
    return out.reshape(n, chunk)


def quantize(
    x: np.ndarray, chunk: int, rng: np.random.Generator | None = None, qmax: int = QMAX
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``x`` to ``(scales float32[ceil(P/chunk)], q int8[P])`` with ``|q| ≤ qmax`` (127 for the wire's
    int8, 7 for int4); pass ``rng`` for stochastic rounding."""
    _check_chunk(chunk)
    if not 1 <= qmax <= QMAX:
        raise ValueError(f"qmax must be in 1..{QMAX}, got {qmax}")
    x = np.asarray(x, dtype=np.float32).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot quantize non-finite values")
    blocks = _padded(x, chunk)
    scales = (np.abs(blocks).max(axis=1) / np.float32(qmax)).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1.0)).astype(np.float32)
    ratio = (blocks / safe[:, None]).astype(np.float32)
    if rng is None:
        # trunc(r + 0.5) would round 0.49999997 up (the float32 sum rounds to 1.0); split off the exact fraction
        whole = np.trunc(ratio)
        rounded = whole + np.copysign(np.abs(ratio - whole) >= np.float32(0.5), ratio)
    else:
        floor = np.floor(ratio)
        rounded = floor + (rng.random(ratio.shape, dtype=np.float32) < (ratio - floor))
    q = np.clip(rounded, -qmax, qmax).astype(np.int8).ravel()[: x.size]
    return scales, q


def dequantize(q: np.ndarray, scales: np.ndarray, chunk: int, dtype: type[np.floating] = np.float32) -> np.ndarray:
    """The vector ``q · scale`` (per chunk) in float32, or exactly in float64 (a 7-bit × 24-bit product)."""
    _check_chunk(chunk)
    q = np.asarray(q, dtype=np.int8)
    scales = np.asarray(scales, dtype=np.float32).astype(dtype, copy=False)
    if scales.size != chunk_count(q.size, chunk):
        raise ValueError(
            f"{q.size} values with chunk {chunk} need {chunk_count(q.size, chunk)} scales, got {scales.size}"
        )
    return q * np.repeat(scales, chunk)[: q.size]  # int8 × float is computed (and returned) in the float's type
