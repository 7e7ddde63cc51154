# HMAC-SHA256 of a signed update (docs/protocol.md, "Signed updates"), by hand: MicroPython has hashlib.sha256 but
# no hmac module. Mac(key) is a write(buf) callable fed the same pieces the message streams out, so the q buffer
# is hashed where it lies (no copy); digest() is the 32-byte sig, computed once.
import hashlib


class Mac:
    def __init__(self, key):
        if len(key) > 64:
            raise ValueError("hmac key longer than a SHA-256 block")
        pad = bytearray(64)  # the key zero-padded to the block size, then XORed with ipad / opad
        pad[: len(key)] = key
        for i in range(64):
            pad[i] ^= 0x36
        self.inner = hashlib.sha256(pad)
        for i in range(64):
            pad[i] ^= 0x36 ^ 0x5C
        self.outer = pad

    def __call__(self, data):
        self.inner.update(data)

    def digest(self):
        outer = hashlib.sha256(self.outer)
        outer.update(self.inner.digest())
        return outer.digest()
