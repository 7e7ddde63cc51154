"""Signed ``up`` messages: HMAC-SHA256 with the device's key over the payload's bytes before a fixed ``sig`` tail.

A signed ``up`` is the unsigned encoding with one more map entry, ``sig`` (bin 32), written last: the map header
counts it and the payload ends with the 38 bytes ``a3 73 69 67 c4 20`` + the 32-byte MAC. The *signed bytes* are the
whole payload minus that tail, header included, so every field is covered and a verifier needs no re-encoding (the
firmware computes the same MAC on the bytes it streams out).
"""

from __future__ import annotations

import hashlib
import hmac
import json

from flcore.errors import WireError
from flcore.topics import is_valid_id

KEY_BYTES = 32
SIG_BYTES = 32
SIG_TAIL = b"\xa3sig\xc4\x20"  # fixstr "sig", then the bin 8 header of a 32-byte value
TAIL_BYTES = len(SIG_TAIL) + SIG_BYTES


def parse_key(text: str) -> bytes:
    """A device key from its 64 hex digits; ValueError naming the problem otherwise."""
    if not isinstance(text, str) or len(text) != 2 * KEY_BYTES:
        raise ValueError(f"a device key is {2 * KEY_BYTES} hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"a device key is {2 * KEY_BYTES} hex digits, got a non-hex character") from None


class KeyFileError(ValueError):
    """A device key file that cannot be used; the message is one line naming its source and the problem."""


def parse_key_file(text: str, source: str = "device keys") -> dict[str, bytes]:
    """The keys of a device key file, a JSON object ``{"<dev id>": "<64 hex digits>", ...}``; ``KeyFileError``."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise KeyFileError(f"{source} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise KeyFileError(f'{source} must hold a JSON object {{"<device id>": "<64 hex digits>", ...}}')
    keys = {}
    for dev, text_key in raw.items():
        if not is_valid_id(dev):
            raise KeyFileError(f"{source}: {dev!r} is not a device id ([A-Za-z0-9_-]{{1,64}})")
        try:
            keys[dev] = parse_key(text_key)
        except ValueError as exc:
            raise KeyFileError(f"{source}: the key of {dev}: {exc}") from None
    return keys


def mac(key: bytes, signed: bytes) -> bytes:
    """HMAC-SHA256 of the signed bytes."""
    return hmac.new(key, signed, hashlib.sha256).digest()


def _one_more_entry(payload: bytes) -> bytes:
    """``payload`` (an encoded msgpack map) with its header counting one more entry, as msgpack would write it."""
    head = payload[:1]
    if not head:
        raise ValueError("an empty payload is not a msgpack map")
    code = head[0]
    if 0x80 <= code < 0x8F:
        return bytes((code + 1,)) + payload[1:]
    if code == 0x8F:
        return b"\xde\x00\x10" + payload[1:]
    if code == 0xDE and len(payload) >= 3:
        count = int.from_bytes(payload[1:3], "big") + 1
        if count <= 0xFFFF:
            return b"\xde" + count.to_bytes(2, "big") + payload[3:]
        return b"\xdf" + count.to_bytes(4, "big") + payload[3:]
    raise ValueError("the payload is not a msgpack map of fewer than 65,535 entries")


def sign(payload: bytes, key: bytes) -> bytes:
    """The signed form of an unsigned encoded ``up`` (a map without ``sig``)."""
    signed = _one_more_entry(payload)
    return signed + SIG_TAIL + mac(key, signed)


def attach(payload: bytes, sig: bytes) -> bytes:
    """An unsigned encoded ``up`` with a given ``sig`` appended (re-encoding a decoded signed message)."""
    if len(sig) != SIG_BYTES:
        raise ValueError(f"sig is {SIG_BYTES} bytes")
    return _one_more_entry(payload) + SIG_TAIL + sig


def split(payload: bytes) -> tuple[bytes, bytes]:
    """(signed bytes, sig) of a signed payload; ``WireError("signature")`` when it does not end in a ``sig`` tail."""
    if len(payload) <= TAIL_BYTES or payload[-TAIL_BYTES:-SIG_BYTES] != SIG_TAIL:
        raise WireError("signature", "sig must be bin 32 and the last field of the map")
    return bytes(payload[:-TAIL_BYTES]), bytes(payload[-SIG_BYTES:])


def verify(payload: bytes, key: bytes) -> None:
    """Check a signed payload against the device's key (constant-time); ``WireError("signature")`` when it fails."""
    signed, sig = split(payload)
    if not hmac.compare_digest(mac(key, signed), sig):
        raise WireError("signature", "HMAC mismatch")


__all__ = [
    "KEY_BYTES",
    "SIG_BYTES",
    "SIG_TAIL",
    "TAIL_BYTES",
    "KeyFileError",
    "attach",
    "mac",
    "parse_key",
    "parse_key_file",
    "sign",
    "split",
    "verify",
]
