# Per-chunk symmetric int8 quantization, identical to flcore's deterministic mode.
#
# flcore computes in float32: scale = f32(max|x|) / f32(127); q = clamp(round_half_away(f32(x / scale)), +-127),
# where the fraction is split off exactly so 0.49999997 rounds to 0. A double-precision MicroPython (unix) gets
# the same float32 results by rounding each quotient through an array('f') cell: a quotient of two float32
# values computed in double and then rounded to float32 is the correctly rounded float32 quotient. On
# single-precision ports (ESP32, RP2040) the rounding step is a no-op.

from array import array

QMAX = 127
MAX_CHUNK = 65536
_F32_MAX = 3.4028234663852886e38
_cell = array("f", [0.0])


def chunk_count(size, chunk):
    return (size + chunk - 1) // chunk


def _f32(v):
    _cell[0] = v
    return _cell[0]


def quantize(x, chunk, scales, q, size=None):
    """Quantize x[:size] into scales (array('f'), ceil(size/chunk) used) and q (bytearray, int8 two's complement)."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= MAX_CHUNK:
        raise ValueError("chunk must be an int in 1..65536")
    if size is None:
        size = len(x)
    n = chunk_count(size, chunk)
    if size > len(x) or size > len(q) or n > len(scales):
        raise ValueError("quantize buffers too small")
    for c in range(n):
        a = c * chunk
        b = min(a + chunk, size)
        m = 0.0
        for k in range(a, b):
            v = abs(x[k])
            if not v <= _F32_MAX:
                raise ValueError("cannot quantize non-finite values")
            if v > m:
                m = v
        s = _f32(m / QMAX)
        scales[c] = s
        if s == 0.0:
            for k in range(a, b):
                q[k] = 0
            continue
        for k in range(a, b):
            r = _f32(x[k] / s)
            whole = int(r)
            if r - whole >= 0.5:
                whole += 1
            elif whole - r >= 0.5:
                whole -= 1
            if whole > QMAX:
                whole = QMAX
            elif whole < -QMAX:
                whole = -QMAX
            q[k] = whole & 0xFF
    return n
