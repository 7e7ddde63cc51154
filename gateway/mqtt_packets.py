"""MQTT 3.1.1 packets for the gateway's lean ``up`` reader: encode what it sends, split what it receives. No I/O.

Only what the reader needs: CONNECT, SUBSCRIBE, QoS 1 PUBLISH, PUBACK, PINGREQ and DISCONNECT out; every packet type
in, split off a byte stream many at a time. ``split`` returns (first byte, body) pairs as memoryview slices of the
caller's buffer (no copy), and how many bytes they used: an incomplete packet at the end stays for the next read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

# Packet types (the high nibble of the first byte) the reader tells apart.
CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP = 2, 3, 4, 9, 13
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
DUP = 0x08
# A remaining length takes at most 4 bytes (up to 268,435,455).
MAX_REMAINING = (1 << 28) - 1
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

_U16 = struct.Struct(">H")


class PacketError(ValueError):
    """The byte stream is not MQTT the reader can follow (the connection must be dropped)."""


def remaining_length(n: int) -> bytes:
    """The variable-length encoding of a packet's remaining length (1–4 bytes, 7 bits each, low bits first)."""
    if not 0 <= n <= MAX_REMAINING:
        raise PacketError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, *body: bytes) -> bytes:
    joined = b"".join(body)
    return bytes((first,)) + remaining_length(len(joined)) + joined


def _text(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _U16.pack(len(raw)) + raw


def connect(client_id: str, keepalive: int, *, clean: bool, username: str | None, password: str | None) -> bytes:
    """CONNECT (protocol level 4); ``clean`` False keeps the session (and its queued QoS 1 messages) at the broker."""
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0)
    fields = [_text(client_id)]
    if username is not None:
        fields.append(_text(username))
        if password is not None:
            flags |= 0x40
            fields.append(_text(password))
    return _packet(0x10, _text("MQTT"), bytes((4, flags)), _U16.pack(keepalive), *fields)


def subscribe(packet_id: int, filters: Iterable[str], qos: int = 1) -> bytes:
    return _packet(0x82, _U16.pack(packet_id), *(_text(f) + bytes((qos,)) for f in filters))


def publish(topic: bytes, payload: bytes, packet_id: int, *, dup: bool = False) -> bytes:
    """A QoS 1 PUBLISH (``dup`` marks a re-send after a reconnect)."""
    return _packet(0x32 | (DUP if dup else 0), _text(topic), _U16.pack(packet_id), payload)


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + _U16.pack(packet_id)


def pubacks(packet_ids: Iterable[int]) -> bytes:
    """Many PUBACKs back to back, for one write."""
    ids = list(packet_ids)
    return struct.pack(">" + "HH" * len(ids), *(v for pid in ids for v in (0x4002, pid)))


def split(buf: bytes | bytearray | memoryview) -> tuple[list[tuple[int, memoryview]], int]:
    """Every complete packet at the start of ``buf`` as (first byte, body), and the bytes they take."""
    view = memoryview(buf)
    end = len(view)
    packets: list[tuple[int, memoryview]] = []
    pos = 0
    while pos + 2 <= end:
        first = view[pos]
        # The remaining length: a 1-byte length (< 128, every ack and control packet) needs no loop.
        length = view[pos + 1]
        head = pos + 2
        if length & 0x80:
            length &= 0x7F
            shift = 7
            while True:
                if head >= end:
                    return packets, pos
                digit = view[head]
                head += 1
                length |= (digit & 0x7F) << shift
                if not digit & 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise PacketError("remaining length longer than 4 bytes")
        if head + length > end:
            break
        packets.append((first, view[head : head + length]))
        pos = head + length
    return packets, pos


def parse_publish(first: int, body: memoryview) -> tuple[memoryview, int, memoryview]:
    """A PUBLISH body → (topic, packet id, payload); the packet id of a QoS 0 message is 0."""
    if len(body) < 2:
        raise PacketError("PUBLISH shorter than its topic length")
    topic_end = 2 + ((body[0] << 8) | body[1])
    qos = (first >> 1) & 0x03
    if qos == 0:
        if topic_end > len(body):
            raise PacketError("PUBLISH topic runs past the packet")
        return body[2:topic_end], 0, body[topic_end:]
    if qos == 3 or topic_end + 2 > len(body):
        raise PacketError("malformed PUBLISH (QoS 3 or truncated packet id)")
    return body[2:topic_end], (body[topic_end] << 8) | body[topic_end + 1], body[topic_end + 2 :]


def packet_id(body: memoryview) -> int:
    """The packet id a PUBACK or SUBACK starts with."""
    if len(body) < 2:
        raise PacketError("acknowledgement without a packet id")
    return (body[0] << 8) | body[1]


__all__ = [
    "CONNACK",
    "CONNACK_REASONS",
    "DISCONNECT",
    "PINGREQ",
    "PINGRESP",
    "PUBACK",
    "PUBLISH",
    "SUBACK",
    "PacketError",
    "connect",
    "packet_id",
    "parse_publish",
    "puback",
    "pubacks",
    "publish",
    "remaining_length",
    "split",
    "subscribe",
]
