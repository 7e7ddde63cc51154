"""How an ``up`` carries its delta (wire key ``enc``, docs/protocol.md "Encodings"): one place that encodes,
validates and dequantizes every encoding.

- ``int8`` (the default; ``enc`` absent): the contract's per-chunk int8 (``flcore.quantize``), P bytes.
- ``int4``: per-chunk 4-bit, two values per byte (``flcore.encodings.int4``), ceil(P/2) bytes.
- ``topk``: the k = ceil(fraction · P) largest values, uint32 indices + per-chunk int8 values, with error feedback
  on the sender (``flcore.encodings.topk``), 5 bytes per kept value.
- ``f32``: the float32 delta itself, 4·P bytes, no scales: the benchmarks' reference. A gateway takes it only when
  it names it in its tasks or lists it in its accepted encodings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flcore.encodings.int4 import pack4, packed_size, quantize4, unpack4
from flcore.encodings.topk import densify, idx_bytes, kept, parse_idx, sparsify, with_feedback
from flcore.errors import WireError
from flcore.quantize import QMAX, chunk_count, dequantize, quantize

INT8, INT4, TOPK, F32 = "int8", "int4", "topk", "f32"
ENCODINGS = (INT8, INT4, TOPK, F32)
ACCEPTED_BY_DEFAULT = (INT8, INT4, TOPK)
# Encodings whose `up` carries `p` (the model's parameter count): the length of `q` alone does not tell it.
SIZED = (INT4, TOPK)
DEFAULT_TOPK = 0.05
# |value| cap of an f32 delta: the same bound int8 updates have (127 × the largest allowed scale).
MAX_SCALE = 1e24
MAX_F32 = QMAX * MAX_SCALE
# MAX_SCALE as the float32 comparison `scales <= MAX_SCALE` sees it, for the same test on Python floats.
_MAX_SCALE_F32 = float(np.float32(MAX_SCALE))
# Up to this many scales (a typical update has a few dozen) Python floats check them faster than numpy reductions.
_FEW_SCALES = 64


def check_encoding(name: str) -> str:
    """``name`` when it is a known encoding, else ValueError listing them."""
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; known: {', '.join(ENCODINGS)}")
    return name


def parse_encodings(text: str) -> tuple[str, ...]:
    """A comma-separated list of encodings, e.g. ``"int8,int4"``; ValueError for an unknown or empty one."""
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise ValueError("name at least one encoding")
    return tuple(check_encoding(n) for n in names)


@dataclass(frozen=True, eq=False)
class Encoded:
    """A delta of ``size`` values in encoding ``enc``: ``q`` (int8; int4 unpacked; float32 for f32), per-chunk
    ``scales`` (empty for f32) and, for topk, the increasing indices ``idx`` of the ``len(q)`` kept values."""

    enc: str
    size: int
    chunk: int
    scales: np.ndarray
    q: np.ndarray
    idx: np.ndarray | None = None

    def delta(self, dtype: type[np.floating] = np.float32) -> np.ndarray:
        """The delta of length ``size`` a receiver folds, in float32 (or exactly, in float64, for the quantized
        encodings)."""
        if self.enc == F32:
            return np.asarray(self.q, dtype=dtype)
        if self.enc == TOPK:
            assert self.idx is not None
            return densify(self.idx, self.q, self.scales, self.chunk, self.size).astype(dtype, copy=False)
        return dequantize(self.q, self.scales, self.chunk, dtype)

    def q_bytes(self) -> bytes:
        """``q`` as it travels."""
        if self.enc == F32:
            return np.asarray(self.q, dtype="<f4").tobytes()
        if self.enc == INT4:
            return pack4(self.q)
        return np.asarray(self.q, dtype=np.int8).tobytes()

    def idx_bytes(self) -> bytes | None:
        return None if self.idx is None else idx_bytes(self.idx)

    @property
    def nbytes(self) -> int:
        """Bytes of the encoded delta on the wire (``q`` + ``scales`` + ``idx``, without msgpack framing)."""
        return len(self.q_bytes()) + 4 * self.scales.size + len(self.idx_bytes() or b"")


def encode(
    delta: np.ndarray,
    enc: str,
    chunk: int,
    fraction: float = DEFAULT_TOPK,
    residual: np.ndarray | None = None,
) -> tuple[Encoded, np.ndarray | None]:
    """``delta`` in ``enc``, and the next error-feedback residual (topk only: what it did not send of
    ``delta + residual``; None for the other encodings, whose ``residual`` is ignored)."""
    x = np.asarray(delta, dtype=np.float32).ravel()
    check_encoding(enc)
    if enc == TOPK:
        (idx, scales, q), left = with_feedback(x, residual, fraction, chunk)
        return Encoded(enc, x.size, chunk, scales, q, idx), left
    if enc == F32:
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot encode non-finite values")
        return Encoded(enc, x.size, chunk, np.zeros(0, dtype=np.float32), x.copy()), None
    scales, q = quantize4(x, chunk) if enc == INT4 else quantize(x, chunk)
    return Encoded(enc, x.size, chunk, scales, q), None


def scales_in_range(scales: np.ndarray) -> bool:
    """Every scale finite and in 0..MAX_SCALE: a NaN fails every comparison, ±inf one of them."""
    if scales.size <= _FEW_SCALES:
        # A sum of finite float32 values stays finite in float64; a NaN or ±inf among them makes it NaN or ±inf.
        values = scales.tolist()
        return not values or (math.isfinite(sum(values)) and min(values) >= 0.0 and max(values) <= _MAX_SCALE_F32)
    # min/max instead of three np.all passes; many scales amortize the two reductions.
    return bool(scales.min() >= 0 and scales.max() <= MAX_SCALE)


def parse(enc: str, size: int, chunk: int, scales_raw: bytes, q_raw: bytes, idx_raw: bytes | None) -> Encoded:
    """Validate the wire fields of a ``size``-value delta in ``enc`` (a known encoding, ``chunk`` already checked);
    ``WireError`` (``length``, ``schema`` or ``scale``, without round/seq) on the first problem."""
    idx = None
    if enc == TOPK:
        if idx_raw is None:
            raise WireError("schema", "a topk update needs idx")
        idx = parse_idx(idx_raw, size)
    values = size if idx is None else idx.size
    q_expected = packed_size(values) if enc == INT4 else 4 * values if enc == F32 else values
    if len(q_raw) != q_expected:
        raise WireError("length", f"q has {len(q_raw)} bytes, {values} {enc} values need {q_expected}")
    scales_expected = 0 if enc == F32 else 4 * chunk_count(values, chunk)
    if len(scales_raw) != scales_expected:
        raise WireError("length", f"scales has {len(scales_raw)} bytes, expected {scales_expected}")
    # Read-only views of the payload (no copy on a little-endian host): a decoded update never changes.
    scales = np.frombuffer(scales_raw, dtype="<f4").astype(np.float32, copy=False)
    if not scales_in_range(scales):
        raise WireError("scale", f"every scale must be finite and in 0..{MAX_SCALE:g}")
    q: np.ndarray
    if enc == F32:
        q = np.frombuffer(q_raw, dtype="<f4").astype(np.float32, copy=False)
        if not (np.all(np.isfinite(q)) and np.all(np.abs(q) <= MAX_F32)):
            raise WireError("scale", f"every f32 value must be finite and within ±{MAX_F32:g}")
    elif enc == INT4:
        q = unpack4(q_raw, size)
    else:
        q = np.frombuffer(q_raw, dtype=np.int8)
    return Encoded(enc, size, chunk, scales, q, idx)


__all__ = [
    "ACCEPTED_BY_DEFAULT",
    "DEFAULT_TOPK",
    "ENCODINGS",
    "F32",
    "INT4",
    "INT8",
    "MAX_SCALE",
    "SIZED",
    "TOPK",
    "Encoded",
    "check_encoding",
    "encode",
    "kept",
    "parse",
    "parse_encodings",
    "scales_in_range",
    "sparsify",
]
