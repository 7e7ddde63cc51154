# Minimal msgpack decoder for the iotfl wire (the encoder is mpack.py): map, str, int, float, bin, array, bool, nil.
#
# unpackb() returns bin fields as memoryview slices of the input (no copy) and raises ValueError for any
# malformed, truncated or unsupported input. Written with few distinct names: it sits in the network phase,
# where every interned name counts.

from micropython import const

_MAX_DEPTH = const(16)
# the fixed-size scalars 0xca..0xd3: byte count, then how to read them (float32, float64, unsigned, signed)
_SIZES = b"\x04\x08\x01\x02\x04\x08\x01\x02\x04\x08"


class _Reader:
    def __init__(self, buf):
        self.buf = memoryview(buf)
        self.pos = 0

    def read(self, n):
        """The next n bytes (a memoryview); ValueError when fewer are left."""
        start = self.pos
        if n > len(self.buf) - start:
            raise ValueError("truncated msgpack")
        self.pos = start + n
        return self.buf[start : start + n]

    def count(self, code, base, codes):
        # a length: in the code itself (fix types), else in the 1, 2 or 4 bytes after it
        for index in range(3):
            if codes[index] and code == codes[index]:
                return int.from_bytes(self.read(1 << index), "big")
        return code - base

    def value(self, depth):
        if depth > _MAX_DEPTH:
            raise ValueError("msgpack nested too deep")
        code = self.read(1)[0]
        if code < 0x80:
            return code
        if code >= 0xE0:
            return code - 0x100
        if code == 0xC0:
            return None
        if code == 0xC2 or code == 0xC3:
            return code == 0xC3
        if 0xCA <= code <= 0xD3:
            data = self.read(_SIZES[code - 0xCA])
            if code < 0xCC:
                import struct

                return struct.unpack(">f" if code == 0xCA else ">d", data)[0]
            value = int.from_bytes(data, "big")
            if code >= 0xD0 and value >> (8 * len(data) - 1):
                value -= 1 << (8 * len(data))  # signed: two's complement
            return value
        if 0xA0 <= code <= 0xBF or 0xD9 <= code <= 0xDB:
            try:
                return str(self.read(self.count(code, 0xA0, b"\xd9\xda\xdb")), "utf-8")
            except UnicodeError:
                raise ValueError("invalid utf-8 in msgpack str") from None
        if 0xC4 <= code <= 0xC6:
            return self.read(self.count(code, 0, b"\xc4\xc5\xc6"))
        if 0x90 <= code <= 0x9F or code == 0xDC or code == 0xDD:
            n = self.count(code, 0x90, b"\0\xdc\xdd")
            if n > len(self.buf) - self.pos:
                raise ValueError("truncated msgpack array")
            return [self.value(depth + 1) for _ in range(n)]
        if 0x80 <= code <= 0x8F or code == 0xDE or code == 0xDF:
            n = self.count(code, 0x80, b"\0\xde\xdf")
            if 2 * n > len(self.buf) - self.pos:
                raise ValueError("truncated msgpack map")
            out = {}
            for _ in range(n):
                key = self.value(depth + 1)
                if not isinstance(key, str):
                    raise ValueError("msgpack map key is not a str")
                out[key] = self.value(depth + 1)
            return out
        raise ValueError(f"unsupported msgpack type 0x{code:02x}")


def unpackb(buf):
    reader = _Reader(buf)
    obj = reader.value(0)
    if reader.pos != len(reader.buf):
        raise ValueError("trailing bytes after msgpack value")
    return obj
