# The task's MLP on the device: ReLU hidden layers, softmax cross-entropy, mini-batch SGD.
#
# Flat parameter order is the contract's (flcore.model): per layer the weight [out, in] row-major, then the
# bias [out]. All buffers are array('f') allocated once in __init__; training accumulates gradients one sample
# at a time, so memory does not grow with the batch size.

import math
import struct
from array import array

try:
    import uctypes
except ImportError:  # a port without uctypes falls back to struct, slower but the same values
    uctypes = None

from layers import check_layers, footprint, param_count  # noqa: F401 - footprint: mlp's public API


def zeros(n):
    """array('f') of n zeros, grown in place from a small block: no transient buffer of the full size."""
    block = bytes(256)
    out = array("f")
    for _ in range(n // 64):
        out.extend(block)
    out.extend(memoryview(block)[: 4 * (n % 64)])
    return out


def _as_bytes(arr, nbytes):
    # a bytearray aliasing arr's float32 storage: copying raw little-endian floats in is one memmove
    return uctypes.bytearray_at(uctypes.addressof(arr), nbytes)


def _copy_f32(dst, src, count):
    """dst[:count] = the little-endian float32 values in the byte buffer src."""
    if uctypes is not None:
        _as_bytes(dst, 4 * count)[:] = memoryview(src)[: 4 * count]
        return
    for k in range(count):
        dst[k] = struct.unpack_from("<f", src, 4 * k)[0]


class MLP:
    def __init__(self, layers, max_batch=1):
        # max_batch is kept for the caller's admission check; buffers hold one sample's activations
        self.layers = list(check_layers(layers))
        self.max_batch = max_batch
        self.P = param_count(self.layers)
        self.w = zeros(self.P)
        self.g = zeros(self.P)
        self.woff = []
        self.aoff = []
        pos = 0
        apos = 0
        for i in range(len(self.layers) - 1):
            self.woff.append(pos)
            pos += (self.layers[i] + 1) * self.layers[i + 1]
            self.aoff.append(apos)
            apos += self.layers[i]
        self.aoff.append(apos)
        self.a = zeros(apos + self.layers[-1])
        widest = max(self.layers)
        self.d0 = zeros(widest)
        self.d1 = zeros(widest)
        self.nbytes = 4 * (2 * self.P + len(self.a) + 2 * widest)

    def load(self, buf):
        """Set the weights from P little-endian float32 (the task's w)."""
        if len(buf) != 4 * self.P:
            raise ValueError(f"w has {len(buf)} bytes, the model needs {4 * self.P}")
        _copy_f32(self.w, buf, self.P)

    def delta(self, base_buf, out=None):
        """out[k] = w[k] - base[k] for the base weights as float32 bytes; out defaults to the gradient buffer."""
        if out is None:
            out = self.g
        if len(base_buf) != 4 * self.P or len(out) < self.P:
            raise ValueError("delta buffers do not match the model")
        _copy_f32(out, base_buf, self.P)
        w = self.w
        for k in range(self.P):
            out[k] = w[k] - out[k]
        return out

    def _forward(self, xs, xo):
        # xs None: a sample store already wrote the input into a[:layers[0]]
        layers = self.layers
        w = self.w
        a = self.a
        if xs is not None:
            for i in range(layers[0]):
                a[i] = xs[xo + i]
        last = len(layers) - 2
        for li in range(last + 1):
            fi = layers[li]
            fo = layers[li + 1]
            wo = self.woff[li]
            bo = wo + fi * fo
            ai = self.aoff[li]
            ao = self.aoff[li + 1]
            for o in range(fo):
                s = w[bo + o]
                r = wo + o * fi
                for i in range(fi):
                    s += w[r + i] * a[ai + i]
                if li < last and s < 0.0:
                    s = 0.0
                a[ao + o] = s
        return self.aoff[-1]

    def logits(self, xs, xo=0, out=None):
        ao = self._forward(xs, xo)
        n = self.layers[-1]
        if out is None:
            out = zeros(n)
        for o in range(n):
            out[o] = self.a[ao + o]
        return out

    def predict(self, xs, xo=0):
        ao = self._forward(xs, xo)
        a = self.a
        best = 0
        for o in range(1, self.layers[-1]):
            if a[ao + o] > a[ao + best]:
                best = o
        return best

    def _softmax(self, ao, y):
        # d0 = softmax - onehot(y); returns the sample's cross-entropy
        a = self.a
        d = self.d0
        n = self.layers[-1]
        m = a[ao]
        for o in range(1, n):
            if a[ao + o] > m:
                m = a[ao + o]
        total = 0.0
        for o in range(n):
            e = math.exp(a[ao + o] - m)
            d[o] = e
            total += e
        for o in range(n):
            d[o] = d[o] / total
        d[y] -= 1.0
        return math.log(total) - (a[ao + y] - m)

    def _backward(self):
        layers = self.layers
        w = self.w
        g = self.g
        a = self.a
        d = self.d0
        dn = self.d1
        for li in range(len(layers) - 2, -1, -1):
            fi = layers[li]
            fo = layers[li + 1]
            wo = self.woff[li]
            bo = wo + fi * fo
            ai = self.aoff[li]
            for o in range(fo):
                do = d[o]
                g[bo + o] += do
                if do != 0.0:
                    r = wo + o * fi
                    for i in range(fi):
                        g[r + i] += do * a[ai + i]
            if li == 0:
                break
            for i in range(fi):
                s = 0.0
                if a[ai + i] > 0.0:
                    r = wo + i
                    for o in range(fo):
                        s += w[r + o * fi] * d[o]
                dn[i] = s
            d, dn = dn, d

    def _step(self, scale):
        w = self.w
        g = self.g
        for k in range(self.P):
            w[k] -= scale * g[k]
            g[k] = 0.0

    def _input(self, xs, rows, s):
        if rows is None:
            return self._forward(xs, s * self.layers[0])
        rows(s, self.a)
        return self._forward(None, 0)

    def train(self, xs, ys, lr, epochs, batch, seed=0):
        """Mini-batch SGD; returns the mean loss of the last epoch.

        xs: N*in features row-major (array('f'), bytearray, list...), or a sample store with len() == N and
        row(i, buf) writing sample i's features into buf[:in] (samples kept in flash, one row in RAM).
        ys: N class labels."""
        n_in = self.layers[0]
        n = len(ys)
        rows = getattr(xs, "row", None)
        if n < 1 or len(xs) != (n if rows else n * n_in):
            raise ValueError(f"xs must hold len(ys) samples of {n_in} features")
        if not (lr == lr and abs(lr) < 1e30) or epochs < 0 or batch < 1:
            raise ValueError("bad lr, epochs or batch")
        for y in ys:
            if not 0 <= y < self.layers[-1]:
                raise ValueError("label out of range")
        order = array("H" if n < 0x10000 else "I", range(n))
        rng = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1
        g = self.g
        for k in range(self.P):
            g[k] = 0.0
        loss = 0.0
        for _ in range(epochs):
            for k in range(n - 1, 0, -1):
                rng ^= (rng << 13) & 0xFFFFFFFF
                rng ^= rng >> 17
                rng ^= (rng << 5) & 0xFFFFFFFF
                j = rng % (k + 1)
                order[k], order[j] = order[j], order[k]
            loss = 0.0
            pending = 0
            for k in range(n):
                s = order[k]
                loss += self._softmax(self._input(xs, rows, s), ys[s])
                self._backward()
                pending += 1
                if pending == batch or k == n - 1:
                    self._step(lr / pending)
                    pending = 0
        if epochs == 0:
            for s in range(n):
                loss += self._softmax(self._input(xs, rows, s), ys[s])
        return loss / n
