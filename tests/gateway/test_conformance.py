"""Wire conformance of the gateway over a real broker, with updates built byte by byte WITHOUT flcore.

(a) hand-encoded msgpack updates (a small encoder below, written from the msgpack spec with ``struct``) are
accepted and folded exactly; (b) every invalid case of the contract's validation list gets its ``rejected`` (or
``late``) ack and reason code, an invalid topic id gets no ack, and the gateway keeps serving; (c) a QoS1
redelivery — republished, sent again with the DUP flag after a dropped connection, or after a reconnect — is
counted once.
"""

from __future__ import annotations

import math
import queue
import socket
import struct
import time

import paho.mqtt.client as paho
import pytest
from gateway_peers import WAIT, Device, make_task, started_node
from paho.mqtt.enums import CallbackAPIVersion

from flcore.messages import Ack
from iotfl.broker import Broker

ROUND, BASE = 2, 1  # the gateway's open round; round 1 is therefore late
LAYERS = (4, 3, 2)
P = 4 * 3 + 3 + 3 * 2 + 2  # 23: weights [out, in] then bias, per layer
CHUNK = 8
MAX_BYTES = 4096
PREFIX = "iotfl/default/gw/gw0"


# --- a minimal msgpack encoder (spec: https://github.com/msgpack/msgpack/blob/master/spec.md) ---------------
class F32(float):
    """A float to encode as msgpack float 32 rather than float 64."""


def mp(obj: object) -> bytes:
    if obj is None:
        return b"\xc0"
    if obj is True or obj is False:
        return b"\xc3" if obj else b"\xc2"
    if isinstance(obj, int):
        if 0 <= obj < 128:
            return struct.pack("B", obj)
        if -32 <= obj < 0:
            return struct.pack("b", obj)
        for lo, hi, tag, fmt in ((0, 0xFF, 0xCC, ">B"), (0, 0xFFFF, 0xCD, ">H"), (0, 0xFFFFFFFF, 0xCE, ">I"),
                                 (-128, 127, 0xD0, ">b"), (-(1 << 15), (1 << 15) - 1, 0xD1, ">h"),
                                 (-(1 << 31), (1 << 31) - 1, 0xD2, ">i")):  # fmt: skip
            if lo <= obj <= hi:
                return bytes([tag]) + struct.pack(fmt, obj)
        return (b"\xcf" + struct.pack(">Q", obj)) if obj > 0 else (b"\xd3" + struct.pack(">q", obj))
    if isinstance(obj, F32):
        return b"\xca" + struct.pack(">f", obj)
    if isinstance(obj, float):
        return b"\xcb" + struct.pack(">d", obj)
    if isinstance(obj, str):
        raw = obj.encode()
        if len(raw) < 32:
            return bytes([0xA0 | len(raw)]) + raw
        return (
            b"\xd9" + struct.pack(">B", len(raw)) if len(raw) < 256 else b"\xda" + struct.pack(">H", len(raw))
        ) + raw
    if isinstance(obj, bytes):
        if len(obj) < 256:
            return b"\xc4" + struct.pack(">B", len(obj)) + obj
        return (
            b"\xc5" + struct.pack(">H", len(obj)) if len(obj) < 65536 else b"\xc6" + struct.pack(">I", len(obj))
        ) + obj
    if isinstance(obj, list):
        head = bytes([0x90 | len(obj)]) if len(obj) < 16 else b"\xdc" + struct.pack(">H", len(obj))
        return head + b"".join(mp(x) for x in obj)
    if isinstance(obj, dict):
        head = bytes([0x80 | len(obj)]) if len(obj) < 16 else b"\xde" + struct.pack(">H", len(obj))
        return head + b"".join(mp(k) + mp(v) for k, v in obj.items())
    raise TypeError(type(obj))


def test_encoder_matches_known_bytes() -> None:
    assert mp({"a": 1}) == b"\x81\xa1a\x01"
    assert mp([-1, 200, -200, 70000, None, True]) == b"\x96\xff\xcc\xc8\xd1\xff\x38\xce\x00\x01\x11\x70\xc0\xc3"
    assert mp(1.5) == b"\xcb\x3f\xf8" + b"\x00" * 6 and mp(F32(1.5)) == b"\xca\x3f\xc0\x00\x00"
    assert mp(b"\x01\x02") == b"\xc4\x02\x01\x02"


# --- hand-built updates ------------------------------------------------------------------------------------
SCALES = [0.5, 0.25, 0.125]  # exact in float32: dequantized values are exact too
Q = [((i * 37) % 255) - 127 for i in range(P)]


def fields(dev: str = "d1", **overrides: object) -> dict:
    body = {
        "v": 1, "t": "up", "dev": dev, "round": ROUND, "base": BASE, "n": 10, "loss": 0.75, "seq": 1, "chunk": CHUNK,
        "scales": struct.pack(f"<{len(SCALES)}f", *SCALES), "q": struct.pack(f"<{P}b", *Q),
    }  # fmt: skip
    for key, value in overrides.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    return body


def expected_delta() -> list[float]:
    return [q * SCALES[i // CHUNK] for i, q in enumerate(Q)]


# --- MQTT peers ---------------------------------------------------------------------------------------------
class AckWatcher:
    """Sees every ack the gateway publishes (``ack/+``), to prove that some messages get none."""

    def __init__(self, broker: Broker) -> None:
        self.acks: queue.Queue[tuple[str, Ack]] = queue.Queue()
        ready = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="ack-watcher")
        self.client.on_message = lambda c, u, m: self.acks.put((m.topic.rsplit("/", 1)[1], Ack.decode(m.payload)))
        self.client.on_subscribe = lambda *a: ready.put(True)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe(f"{PREFIX}/ack/+", 1)
        ready.get(timeout=WAIT)

    def all(self, within: float = 0.5) -> list[tuple[str, Ack]]:
        out, end = [], time.monotonic() + within
        while (left := end - time.monotonic()) > 0:
            try:
                out.append(self.acks.get(timeout=left))
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gateway(mosquitto: Broker):
    with started_node(mosquitto.url, max_bytes=MAX_BYTES) as node:
        node.open_sub_round(make_task(round=ROUND, base=BASE))
        yield node


@pytest.fixture
def watcher(mosquitto: Broker):
    w = AckWatcher(mosquitto)
    yield w
    w.close()


META = {"battery": F32(0.25), "train_ms": 1200, "ram_class": "class2", "fw": "1.0"}


def test_a_hand_encoded_updates_are_accepted_and_folded_exactly(mosquitto: Broker, gateway) -> None:
    variants = {
        "plain": fields("p1"),
        "reordered": dict(reversed(list(fields("p2").items()))),
        "f32_loss_and_extras": fields("p3", loss=F32(0.5), sub=0, x_future={"k": [1, 2]}, meta=META),
        "int_loss_wide_ints": fields("p4", loss=1, seq=70000, n=300),
    }  # fmt: skip
    device = Device(mosquitto.url, "probe")
    try:
        for body in variants.values():
            device.send(mp(body), topic=f"{PREFIX}/up/{body['dev']}")
    finally:
        device.close()
    deadline = time.monotonic() + WAIT
    while gateway.counters["accepted"] < len(variants) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.counters == {"accepted": 4}, gateway.counters
    total = gateway.close_sub_round()
    n = 10 + 10 + 10 + 300
    assert (total.k, total.n) == (4, n)
    assert total.total.tolist() == [n * d for d in expected_delta()]
    assert gateway.totals.loss == pytest.approx((10 * 0.75 + 10 * 0.5 + 10 * 0.75 + 300 * 1) / n)


INVALID = [
    # (case, payload, expected status, reason, round, seq)
    ("not msgpack", b"\xc1\xc1", "rejected", "decode", None, None),
    ("truncated", mp(fields())[:-5], "rejected", "decode", None, None),
    ("not a map", mp([1, 2]), "rejected", "decode", None, None),
    ("version", mp(fields(v=2)), "rejected", "version", ROUND, 1),
    ("type", mp(fields(t="task")), "rejected", "schema", ROUND, 1),
    ("missing q", mp(fields(q=None)), "rejected", "schema", ROUND, 1),
    ("missing loss", mp(fields(loss=None)), "rejected", "schema", ROUND, 1),
    ("round as str", mp(fields(round="2")), "rejected", "schema", None, 1),
    ("n as float", mp(fields(n=10.0)), "rejected", "schema", ROUND, 1),
    ("q as str", mp(fields(q="x" * P)), "rejected", "schema", ROUND, 1),
    ("dev mismatch", mp(fields(dev="d2")), "rejected", "dev_mismatch", ROUND, 1),
    ("n zero", mp(fields(n=0)), "rejected", "n_range", ROUND, 1),
    ("n too big", mp(fields(n=100_001)), "rejected", "n_range", ROUND, 1),
    ("q short", mp(fields(q=b"\x00" * (P - 1))), "rejected", "length", ROUND, 1),
    ("q long", mp(fields(q=b"\x00" * (P + 1))), "rejected", "length", ROUND, 1),
    ("scales short", mp(fields(scales=struct.pack("<2f", 1, 1))), "rejected", "length", ROUND, 1),
    ("scale negative", mp(fields(scales=struct.pack("<3f", 1, -0.5, 1))), "rejected", "scale", ROUND, 1),
    ("scale nan", mp(fields(scales=struct.pack("<3f", 1, math.nan, 1))), "rejected", "scale", ROUND, 1),
    ("scale inf", mp(fields(scales=struct.pack("<3f", math.inf, 1, 1))), "rejected", "scale", ROUND, 1),
    ("loss nan", mp(fields(loss=math.nan)), "rejected", "loss", ROUND, 1),
    ("loss inf", mp(fields(loss=-math.inf)), "rejected", "loss", ROUND, 1),
    ("too large", mp(fields(pad=b"\x00" * MAX_BYTES)), "rejected", "too_large", None, None),
    ("meta list", mp(fields(meta=[1])), "rejected", "schema", ROUND, 1),
    ("meta battery str", mp(fields(meta={"battery": "full"})), "rejected", "schema", ROUND, 1),
    ("meta battery > 1", mp(fields(meta={"battery": 1.5})), "rejected", "schema", ROUND, 1),
    ("meta train_ms float", mp(fields(meta={"train_ms": 1.5})), "rejected", "schema", ROUND, 1),
    ("future round", mp(fields(round=ROUND + 1, base=ROUND)), "rejected", "future_round", ROUND + 1, 1),
    ("base mismatch", mp(fields(base=BASE + 1)), "rejected", "base_mismatch", ROUND, 1),
    ("late", mp(fields(round=ROUND - 1, base=BASE - 1)), "late", "late", ROUND - 1, 1),
]  # fmt: skip


def test_b_every_invalid_case_gets_its_ack_and_the_gateway_keeps_serving(
    mosquitto: Broker, gateway, watcher: AckWatcher
) -> None:
    device = Device(mosquitto.url, "d1")
    try:
        for case, payload, status, reason, rnd, seq in INVALID:
            device.send(payload)
            ack = device.ack()
            assert (ack.status, ack.reason, ack.round, ack.seq) == (status, reason, rnd, seq), case
        # Rule 1: a topic id outside [A-Za-z0-9_-]{1,64} is dropped with no ack on any topic.
        device.send(mp(fields("bad.id")), topic=f"{PREFIX}/up/bad.id")
        device.send(mp(fields("x" * 65)), topic=f"{PREFIX}/up/{'x' * 65}")
        assert len(watcher.all(within=0.2)) == len(INVALID)  # the acks above, nothing more
        assert device.no_ack(within=0.5)
        # Still serving: the same device's valid update is accepted (a rejection does not use up its slot).
        device.send(mp(fields()))
        assert device.ack().status == "accepted"
    finally:
        device.close()
    assert [dev for dev, _ in watcher.all(within=0.3)] == ["d1"]
    counters = gateway.counters
    assert counters["topic"] == 2 and counters["accepted"] == 1 and counters["late"] == 1
    assert sum(counters.values()) == len(INVALID) + 3
    assert gateway.close_sub_round().k == 1


def _packet(kind: int, body: bytes) -> bytes:
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            return bytes([kind]) + encoded + body


def _string(s: str) -> bytes:
    return struct.pack(">H", len(s.encode())) + s.encode()


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    kind = exact(1)[0]
    length, shift = 0, 0
    while True:
        byte = exact(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return kind, exact(length)


def raw_session(port: int, client_id: str) -> socket.socket:
    """A bare MQTT 3.1.1 connection (persistent session), so the test controls the DUP flag and packet id."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    sock.sendall(_packet(0x10, _string("MQTT") + bytes([4, 0x00]) + struct.pack(">H", 30) + _string(client_id)))
    kind, body = _read_packet(sock)
    assert kind == 0x20 and body[1] == 0, "CONNACK refused"
    return sock


def raw_publish(sock: socket.socket, topic: str, payload: bytes, packet_id: int, dup: bool) -> None:
    sock.sendall(_packet(0x32 | (0x08 if dup else 0), _string(topic) + struct.pack(">H", packet_id) + payload))


def test_c_qos1_redelivery_is_counted_once(mosquitto: Broker, gateway, watcher: AckWatcher) -> None:
    body = mp(fields("r1", seq=9))
    topic = f"{PREFIX}/up/r1"
    # 1. The device's first send reaches the gateway, the connection drops before the PUBACK comes back.
    sock = raw_session(mosquitto.port, "raw-r1")
    raw_publish(sock, topic, body, packet_id=7, dup=False)
    first = watcher.acks.get(timeout=WAIT)
    sock.close()
    # 2. It reconnects and retransmits with DUP=1 and the same packet id, as MQTT 3.1.1 §4.4 requires.
    sock = raw_session(mosquitto.port, "raw-r1")
    try:
        raw_publish(sock, topic, body, packet_id=7, dup=True)
        kind, ack_body = _read_packet(sock)
        assert kind == 0x40 and struct.unpack(">H", ack_body)[0] == 7
        second = watcher.acks.get(timeout=WAIT)
        sock.sendall(b"\xe0\x00")
    finally:
        sock.close()
    # 3. A plain republish, and one more after a fresh paho connection.
    device = Device(mosquitto.url, "r1")
    try:
        device.send(body)
        assert device.ack().status == "duplicate"
    finally:
        device.close()
    device = Device(mosquitto.url, "r1")
    try:
        device.send(body)
        assert device.ack().status == "duplicate"
    finally:
        device.close()
    assert first == ("r1", Ack(ROUND, 9, "accepted", ""))
    assert second == ("r1", Ack(ROUND, 9, "duplicate", "duplicate"))
    total = gateway.close_sub_round()
    assert (total.k, total.n) == (1, 10)
    assert gateway.counters == {"accepted": 1, "duplicate": 3}
    # Redelivered after the sub-round closed: still `duplicate`, so the device learns it was counted.
    device = Device(mosquitto.url, "r1")
    try:
        device.send(body)
        assert device.ack().status == "duplicate"
    finally:
        device.close()
