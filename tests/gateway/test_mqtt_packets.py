"""The lean reader's MQTT 3.1.1 codec, byte for byte: what it sends and how it splits what it receives."""

from __future__ import annotations

import pytest

from gateway import mqtt_packets as packets


def test_remaining_length_takes_one_to_four_bytes() -> None:
    cases = {
        0: b"\x00",
        127: b"\x7f",
        128: b"\x80\x01",
        16_383: b"\xff\x7f",
        16_384: b"\x80\x80\x01",
        2_097_151: b"\xff\xff\x7f",
        2_097_152: b"\x80\x80\x80\x01",
        268_435_455: b"\xff\xff\xff\x7f",
    }
    for n, encoded in cases.items():
        assert packets.remaining_length(n) == encoded
    with pytest.raises(packets.PacketError):
        packets.remaining_length(268_435_456)


def test_connect_with_a_persistent_session_and_credentials() -> None:
    got = packets.connect("gw", 30, clean=False, username="u", password="pw")
    body = b"\x00\x04MQTT\x04\xc0\x00\x1e" + b"\x00\x02gw" + b"\x00\x01u" + b"\x00\x02pw"
    assert got == b"\x10" + bytes([len(body)]) + body
    anonymous = packets.connect("gw", 30, clean=True, username=None, password=None)
    assert anonymous == b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x1e\x00\x02gw"


def test_subscribe_publish_and_acks() -> None:
    assert packets.subscribe(1, ["a/+"]) == b"\x82\x08\x00\x01\x00\x03a/+\x01"
    assert packets.publish(b"t/x", b"hi", 0x1234) == b"\x32\x09\x00\x03t/x\x12\x34hi"
    assert packets.publish(b"t/x", b"hi", 7, dup=True)[:1] == b"\x3a"
    assert packets.puback(0x0102) == b"\x40\x02\x01\x02"
    assert packets.pubacks([1, 0xFFFF]) == b"\x40\x02\x00\x01\x40\x02\xff\xff"
    assert packets.pubacks([]) == b""


def test_a_large_publish_has_a_multi_byte_length_and_parses_back() -> None:
    payload = bytes(range(256)) * 10  # 2,560 B: a 2-byte remaining length
    raw = packets.publish(b"iotfl/f/gw/g/up/d1", payload, 513)
    assert raw[:3] == b"\x32" + packets.remaining_length(len(raw) - 3)
    found, used = packets.split(raw)
    assert used == len(raw) and len(found) == 1
    topic, pid, body = packets.parse_publish(*found[0])
    assert (bytes(topic), pid, bytes(body)) == (b"iotfl/f/gw/g/up/d1", 513, payload)


def test_many_packets_in_one_read_and_an_incomplete_one_left_for_the_next() -> None:
    stream = b"".join(packets.publish(b"t/%d" % i, b"x" * (i * 50), i + 1) for i in range(5))
    tail = packets.publish(b"t/last", b"y" * 300, 99)
    data = stream + b"\x40\x02\x00\x05" + b"\xd0\x00" + tail[:-1]
    found, used = packets.split(data)
    assert used == len(stream) + 6  # everything but the unfinished PUBLISH
    kinds = [first >> 4 for first, _ in found]
    assert kinds == [packets.PUBLISH] * 5 + [packets.PUBACK, packets.PINGRESP]
    parsed = [packets.parse_publish(first, body) for first, body in found[:5]]
    assert [(bytes(t), pid, len(p)) for t, pid, p in parsed] == [(b"t/%d" % i, i + 1, i * 50) for i in range(5)]
    assert packets.packet_id(found[5][1]) == 5
    found, used = packets.split(data[used:] + tail[-1:])
    assert used == len(tail) and bytes(packets.parse_publish(*found[0])[2]) == b"y" * 300


def test_a_packet_split_at_every_byte_is_found_only_when_complete() -> None:
    raw = packets.publish(b"t", b"z" * 200, 3)  # 2-byte remaining length: splits inside the header too
    for cut in range(len(raw)):
        assert packets.split(raw[:cut]) == ([], 0)
    found, used = packets.split(memoryview(raw))
    assert used == len(raw) and bytes(found[0][1]) == raw[3:]


def test_qos0_publish_has_no_packet_id() -> None:
    raw = b"\x30\x05\x00\x01tok"
    (first, body), *_ = packets.split(raw)[0]
    topic, pid, payload = packets.parse_publish(first, body)
    assert (bytes(topic), pid, bytes(payload)) == (b"t", 0, b"ok")


def test_malformed_packets_are_errors() -> None:
    with pytest.raises(packets.PacketError):
        packets.split(b"\x30\xff\xff\xff\xff\x01")  # a 5-byte remaining length
    with pytest.raises(packets.PacketError):
        packets.parse_publish(0x32, memoryview(b"\x00\x05ab"))  # topic runs past the packet
    with pytest.raises(packets.PacketError):
        packets.parse_publish(0x36, memoryview(b"\x00\x01t\x00\x01"))  # QoS 3
    with pytest.raises(packets.PacketError):
        packets.packet_id(memoryview(b"\x00"))
