# Minimal msgpack for the iotfl wire: map, str, int, float, bin, array, bool, nil.
#
# Encoding matches msgpack-python's packb(use_bin_type=True) byte for byte: ints in their smallest form
# (unsigned for >= 0), floats as float64 (0xcb), str8 for 32..255-byte strings, bin for byte buffers.
# The Packer sends every piece through a write(buf) callable, so big bin fields stream straight from their
# buffers; write must consume buf before returning (socket.write, bytearray.extend, a hash update, Sink).
# unpackb() returns bin fields as memoryview slices of the input (no copy) and raises ValueError for any
# malformed, truncated or unsupported input.

import struct

MAX_DEPTH = 16


class Packer:
    def __init__(self, write):
        self.write = write
        self._b = bytearray(9)
        mv = memoryview(self._b)
        # one view per header length, made once, so writing a header allocates nothing
        self._v = [mv[:n] for n in range(10)]

    def _put(self, code, fmt, n, v):
        b = self._b
        b[0] = code
        struct.pack_into(fmt, b, 1, v)
        self.write(self._v[n])

    def _sized(self, n, fix_limit, fix_base, c8, c16, c32):
        if n < fix_limit:
            self._b[0] = fix_base | n
            self.write(self._v[1])
        elif c8 and n < 0x100:
            self._put(c8, ">B", 2, n)
        elif n < 0x10000:
            self._put(c16, ">H", 3, n)
        elif n < 0x100000000:
            self._put(c32, ">I", 5, n)
        else:
            raise ValueError("length too large")

    def nil(self):
        self._b[0] = 0xC0
        self.write(self._v[1])

    def bool(self, v):
        self._b[0] = 0xC3 if v else 0xC2
        self.write(self._v[1])

    def int(self, i):
        if -32 <= i < 0x80:
            self._b[0] = i & 0xFF
            self.write(self._v[1])
        elif i >= 0:
            if i < 0x100:
                self._put(0xCC, ">B", 2, i)
            elif i < 0x10000:
                self._put(0xCD, ">H", 3, i)
            elif i < 0x100000000:
                self._put(0xCE, ">I", 5, i)
            elif i < 0x10000000000000000:
                self._put(0xCF, ">Q", 9, i)
            else:
                raise ValueError("int too large")
        elif i >= -0x80:
            self._put(0xD0, ">b", 2, i)
        elif i >= -0x8000:
            self._put(0xD1, ">h", 3, i)
        elif i >= -0x80000000:
            self._put(0xD2, ">i", 5, i)
        elif i >= -0x8000000000000000:
            self._put(0xD3, ">q", 9, i)
        else:
            raise ValueError("int too small")

    def float(self, f):
        self._put(0xCB, ">d", 9, f)

    def str(self, s):
        data = s.encode()
        self._sized(len(data), 32, 0xA0, 0xD9, 0xDA, 0xDB)
        self.write(data)

    def bin_header(self, n):
        self._sized(n, 0, 0, 0xC4, 0xC5, 0xC6)

    def raw(self, buf):
        self.write(buf)

    def bin(self, buf):
        # buf is a byte buffer (bytes, bytearray, memoryview of those): len() is its byte count
        self.bin_header(len(buf))
        self.write(buf)

    def array(self, n):
        self._sized(n, 16, 0x90, 0, 0xDC, 0xDD)

    def map(self, n):
        self._sized(n, 16, 0x80, 0, 0xDE, 0xDF)

    def value(self, obj):
        if obj is None:
            self.nil()
        elif obj is True or obj is False:
            self.bool(obj)
        elif isinstance(obj, int):
            self.int(obj)
        elif isinstance(obj, float):
            self.float(obj)
        elif isinstance(obj, str):
            self.str(obj)
        elif isinstance(obj, (bytes, bytearray, memoryview)):
            self.bin(obj)
        elif isinstance(obj, (list, tuple)):
            self.array(len(obj))
            for item in obj:
                self.value(item)
        elif isinstance(obj, dict):
            self.map(len(obj))
            for key in obj:
                self.str(key)
                self.value(obj[key])
        else:
            raise TypeError("cannot pack " + type(obj).__name__)


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


def packb(obj):
    out = bytearray()
    Packer(out.extend).value(obj)
    return bytes(out)


# the fixed-size scalars 0xca..0xd3: struct format and byte count
_FORMATS = (">f", ">d", ">B", ">H", ">I", ">Q", ">b", ">h", ">i", ">q")
_SIZES = b"\x04\x08\x01\x02\x04\x08\x01\x02\x04\x08"


class _Reader:
    def __init__(self, buf):
        self.mv = memoryview(buf)
        self.p = 0

    def take(self, n):
        p = self.p
        if n > len(self.mv) - p:
            raise ValueError("truncated msgpack")
        self.p = p + n
        return p

    def length(self, c, fix_base, c8, c16, c32):
        if c8 and c == c8:
            return self.mv[self.take(1)]
        if c == c16:
            return struct.unpack_from(">H", self.mv, self.take(2))[0]
        if c == c32:
            return struct.unpack_from(">I", self.mv, self.take(4))[0]
        return c - fix_base

    def text(self, n):
        p = self.take(n)
        try:
            return str(self.mv[p : p + n], "utf-8")
        except UnicodeError:
            raise ValueError("invalid utf-8 in msgpack str") from None

    def value(self, depth):
        if depth > MAX_DEPTH:
            raise ValueError("msgpack nested too deep")
        c = self.mv[self.take(1)]
        if c < 0x80:
            return c
        if c >= 0xE0:
            return c - 0x100
        if c == 0xC0:
            return None
        if c == 0xC2:
            return False
        if c == 0xC3:
            return True
        if 0xCA <= c <= 0xD3:
            return struct.unpack_from(_FORMATS[c - 0xCA], self.mv, self.take(_SIZES[c - 0xCA]))[0]
        if 0xA0 <= c <= 0xBF or 0xD9 <= c <= 0xDB:
            return self.text(self.length(c, 0xA0, 0xD9, 0xDA, 0xDB))
        if 0xC4 <= c <= 0xC6:
            n = self.length(c, 0, 0xC4, 0xC5, 0xC6)
            p = self.take(n)
            return self.mv[p : p + n]
        if 0x90 <= c <= 0x9F or c == 0xDC or c == 0xDD:
            n = self.length(c, 0x90, 0, 0xDC, 0xDD)
            if n > len(self.mv) - self.p:
                raise ValueError("truncated msgpack array")
            return [self.value(depth + 1) for _ in range(n)]
        if 0x80 <= c <= 0x8F or c == 0xDE or c == 0xDF:
            n = self.length(c, 0x80, 0, 0xDE, 0xDF)
            if 2 * n > len(self.mv) - self.p:
                raise ValueError("truncated msgpack map")
            out = {}
            for _ in range(n):
                key = self.value(depth + 1)
                if not isinstance(key, str):
                    raise ValueError("msgpack map key is not a str")
                out[key] = self.value(depth + 1)
            return out
        raise ValueError(f"unsupported msgpack type 0x{c:02x}")


def unpackb(buf):
    r = _Reader(buf)
    obj = r.value(0)
    if r.p != len(r.mv):
        raise ValueError("trailing bytes after msgpack value")
    return obj
