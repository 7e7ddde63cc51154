# Minimal msgpack for the iotfl wire: map, str, int, float, bin, array, bool, nil.
#
# Encoding matches msgpack-python's packb(use_bin_type=True) byte for byte: ints in their smallest form
# (unsigned for >= 0), floats as float64 (0xcb), str8 for 32..255-byte strings, bin for byte buffers.
# The Packer sends every piece through a write(buf) callable, so big bin fields stream straight from their
# buffers; write must consume buf before returning (socket.write, bytearray.extend, a hash update, upmsg.Sink).
# The decoder is unpack.py: a phase that only encodes (or only decodes) loads half the code.

import struct


class Packer:
    # Few distinct names on purpose: every name a module uses is interned for good, and the network phase counts
    # its heap in bytes. A header is a small bytes object (code + big-endian length or value).
    def __init__(self, write):
        self.write = write

    def _head(self, code, n, value, signed=False):
        self.write(bytes((code,)) + value.to_bytes(n, "big", signed))

    def _sized(self, n, fix, base, codes):
        # codes: the 8-, 16- and 32-bit length codes (0 where the type has no 8-bit form)
        if n < fix:
            self.write(bytes((base | n,)))
        elif codes[0] and n < 0x100:
            self._head(codes[0], 1, n)
        elif n < 0x10000:
            self._head(codes[1], 2, n)
        elif n < 0x100000000:
            self._head(codes[2], 4, n)
        else:
            raise ValueError("length too large")

    def nil(self):
        self.write(b"\xc0")

    def bool(self, value):
        self.write(b"\xc3" if value else b"\xc2")

    def int(self, value):
        if -32 <= value < 0x80:
            self.write(bytes((value & 0xFF,)))
            return
        signed = value < 0
        n = 1
        # the smallest of 1, 2, 4, 8 bytes that holds value (unsigned when >= 0, as msgpack-python packs)
        while n <= 8 and not (-(1 << (8 * n - 1)) <= value < (1 << (8 * n - 1) if signed else 1 << (8 * n))):
            n *= 2
        if n > 8:
            raise ValueError("int out of range")
        self._head((0xD0 if signed else 0xCC) + (0, 1, 0, 2, 0, 0, 0, 3)[n - 1], n, value, signed)

    def float(self, value):
        self.write(b"\xcb" + struct.pack(">d", value))

    def str(self, value):
        value = value.encode()
        self._sized(len(value), 32, 0xA0, b"\xd9\xda\xdb")
        self.write(value)

    def bin_header(self, n):
        self._sized(n, 0, 0, b"\xc4\xc5\xc6")

    def raw(self, value):
        self.write(value)

    def bin(self, value):
        # a byte buffer (bytes, bytearray, memoryview of those): len() is its byte count
        self.bin_header(len(value))
        self.write(value)

    def array(self, n):
        self._sized(n, 16, 0x90, b"\0\xdc\xdd")

    def map(self, n):
        self._sized(n, 16, 0x80, b"\0\xde\xdf")

    def value(self, value):
        if value is None:
            self.nil()
        elif value is True or value is False:
            self.bool(value)
        elif isinstance(value, int):
            self.int(value)
        elif isinstance(value, float):
            self.float(value)
        elif isinstance(value, str):
            self.str(value)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            self.bin(value)
        elif isinstance(value, (list, tuple)):
            self.array(len(value))
            for item in value:
                self.value(item)
        elif isinstance(value, dict):
            self.map(len(value))
            for key in value:
                self.str(key)
                self.value(value[key])
        else:
            raise TypeError("cannot pack " + type(value).__name__)


def packb(obj):
    out = bytearray()
    Packer(out.extend).value(obj)
    return bytes(out)
