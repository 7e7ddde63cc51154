# The up message of wire v1, streamed through write(buf): scales and q go out straight from their buffers. Keys
# are written in flcore's order with unset optional fields omitted, so the bytes equal flcore's Up(...).encode().
# MicroPython dicts do not keep insertion order, so meta keys are written in a fixed order (the known ones, then
# the rest sorted); flcore receivers read meta by key. With a key (config.json "hmac") the message is signed: the
# map counts one more entry, every byte written so far goes through the HMAC too, and the sig tail ends it.

from mpack import Packer
from wire import WIRE_VERSION, _fields

try:
    import uctypes
except ImportError:
    uctypes = None

META_ORDER = ("battery", "train_ms", "ram_class", "fw")
SIG_TAIL = b"\xa3sig\xc4\x20"  # fixstr "sig" and the bin 8 header of the 32-byte HMAC: not signed itself


def _f32_bytes(arr, count):
    # the raw float32 storage as a byte buffer (little-endian on every supported board); no copy with uctypes
    if uctypes is not None:
        return uctypes.bytearray_at(uctypes.addressof(arr), 4 * count)
    return bytes(memoryview(arr)[:count])


def write_up(write, dev, rnd, base, n, loss, seq, chunk, scales, q, sub=0, meta=None, size=None, key=None):
    """Stream the up message for q[:size] (int8 bytes) and its ceil(size/chunk) scales (array('f')), signed with
    key (32 bytes) when given."""
    if size is None:
        size = len(q)
    nscales = (size + chunk - 1) // chunk
    if size > len(q) or nscales > len(scales):
        raise ValueError("up buffers too small")
    out = write
    if key is not None:
        from upsig import Mac

        mac = Mac(key)

        def write(data):
            mac(data)
            out(data)

    p = Packer(write)
    p.map(11 + (1 if sub else 0) + (1 if meta is not None else 0) + (1 if key is not None else 0))
    _fields(p, (("v", WIRE_VERSION), ("t", "up"), ("dev", dev), ("round", rnd), ("base", base), ("n", n)))
    _fields(p, (("loss", float(loss)), ("seq", seq), ("chunk", chunk)))
    p.str("scales")
    p.bin_header(4 * nscales)
    p.raw(_f32_bytes(scales, nscales))
    p.str("q")
    p.bin_header(size)
    p.raw(memoryview(q)[:size])
    if sub:
        _fields(p, (("sub", sub),))
    if meta is not None:
        keys = [k for k in META_ORDER if k in meta] + sorted(k for k in meta if k not in META_ORDER)
        p.str("meta")
        p.map(len(keys))
        _fields(p, [(k, meta[k]) for k in keys])
    if key is not None:
        out(SIG_TAIL)
        out(mac.digest())


def up_size(dev, rnd, base, n, loss, seq, chunk, scales, q, sub=0, meta=None, size=None, key=None):
    """The byte length of write_up's message (an MQTT publish needs it before the payload)."""
    count = Sink()
    write_up(count, dev, rnd, base, n, loss, seq, chunk, scales, q, sub, meta, size)
    # a signed message has one more map entry (the header stays one byte below 16 entries) and the 38-byte tail
    return count.n + (38 if key is not None else 0)


class Sink:
    """A write callable: Sink(size) fills a preallocated bytearray (.view() is what was written);
    Sink() only counts bytes in .n (the size of a message before sending it)."""

    def __init__(self, size=None):
        self.buf = None if size is None else bytearray(size)
        self.mv = None if size is None else memoryview(self.buf)
        self.n = 0

    def reset(self):
        self.n = 0

    def __call__(self, data):
        end = self.n + len(data)
        if self.mv is not None:
            if end > len(self.buf):
                raise ValueError("buffer full")
            self.mv[self.n : end] = data
        self.n = end

    def view(self):
        return self.mv[: self.n]
