"""The ``int4`` encoding: per-chunk symmetric 4-bit quantization, two values per byte.

Quantization is ``flcore.quantize`` with ``qmax`` = 7: ``scale = max|x| / 7`` per chunk of ``chunk`` values,
``q = clamp(round_half_away(x / scale), -7, 7)``. Packing: value ``i`` goes to byte ``i // 2``, even ``i`` in the
low nibble (bits 0–3), odd ``i`` in the high nibble (bits 4–7), each as a 4-bit two's complement (``-7`` = ``0x9``,
``-1`` = ``0xF``); an odd count leaves the last byte's high nibble 0. The nibble ``0x8`` (-8) is never sent and is
refused, as is a non-zero pad nibble, so every value has exactly one encoding.
"""

from __future__ import annotations

import numpy as np

from flcore.errors import WireError
from flcore.quantize import quantize

QMAX4 = 7


def packed_size(size: int) -> int:
    """Bytes of ``size`` packed values."""
    return (size + 1) // 2


def quantize4(x: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """``(scales float32[ceil(P/chunk)], q int8[P] in -7..7)``."""
    return quantize(x, chunk, qmax=QMAX4)


def pack4(q: np.ndarray) -> bytes:
    """Two int8 values in -7..7 per byte, low nibble first."""
    q = np.asarray(q, dtype=np.int8).ravel()
    if np.any(np.abs(q.astype(np.int16)) > QMAX4):
        raise ValueError(f"int4 values must be in -{QMAX4}..{QMAX4}")
    nibbles = np.zeros(2 * packed_size(q.size), dtype=np.uint8)
    nibbles[: q.size] = q.view(np.uint8) & 0x0F
    return (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()


def unpack4(data: bytes, size: int) -> np.ndarray:
    """The ``size`` int8 values of packed ``data``; ``WireError`` (``length`` or ``schema``) for a bad packing."""
    if len(data) != packed_size(size):
        raise WireError("length", f"q has {len(data)} bytes, {size} int4 values need {packed_size(size)}")
    packed = np.frombuffer(data, dtype=np.uint8)
    nibbles = np.empty(2 * packed.size, dtype=np.uint8)
    nibbles[0::2], nibbles[1::2] = packed & 0x0F, packed >> 4
    if np.any(nibbles == 0x08):
        raise WireError("schema", "int4 nibble 0x8 (-8) is not a value")
    if size % 2 and nibbles[-1]:
        raise WireError("schema", "the pad nibble of an odd int4 count must be 0")
    # sign-extend: nibbles 0x9..0xF are -7..-1
    return np.where(nibbles[:size] >= 8, nibbles[:size].astype(np.int16) - 16, nibbles[:size]).astype(np.int8)


__all__ = ["QMAX4", "pack4", "packed_size", "quantize4", "unpack4"]
