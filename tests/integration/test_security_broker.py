"""A provisioned fleet against a real mosquitto running the generated iotfl.conf (TLS listener, password file, ACL):
who may connect, who may publish and read what, and which TLS clients the broker refuses."""

from __future__ import annotations

import queue
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from provisioned_fleet import FLEET, Fleet, provisioned_fleet

from flcore.messages import Ack, Task, Up
from flcore.model import ModelSpec
from flcore.quantize import quantize
from gateway.node import GatewayNode
from gateway.settings import GatewaySettings
from iotfl.pki import new_ca

WAIT = 5.0
SPEC = ModelSpec((4, 3, 2))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with provisioned_fleet(tmp_path_factory.mktemp("secure")) as made:
        yield made


class Peer:
    """A paho client (MQTT 3.1.1) with bounded waits; ``messages`` collects what it receives."""

    def __init__(self, fleet: Fleet, user: str | None, password: str | None = None, ca: Path | None = None):
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"peer-{user}-{time.monotonic_ns()}")
        if user is not None:
            self.client.username_pw_set(user, password if password is not None else fleet.password(user))
        self.client.tls_set(ca_certs=str(ca or fleet.ca))
        self.connack: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.messages: queue.Queue = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, reason, _p: self.connack.put(reason)
        self.client.on_subscribe = lambda _c, _u, _m, reasons, _p: self.subacks.put([r.value for r in reasons])
        self.client.on_message = lambda _c, _u, msg: self.messages.put((msg.topic, bytes(msg.payload)))
        self.port = fleet.broker.port

    def connect(self) -> paho.ReasonCode:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        return self.connack.get(timeout=WAIT)

    def subscribe(self, topic: str) -> list[int]:
        self.client.subscribe(topic, qos=1)
        return self.subacks.get(timeout=WAIT)

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(WAIT)

    def drain(self, within: float = 0.5) -> list[tuple[str, bytes]]:
        got = []
        end = time.monotonic() + within
        while (left := end - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    for peer in made:
        peer.close()


def up(dev: str, seq: int) -> bytes:
    scales, q = quantize(np.full(SPEC.param_count, 0.01 * (seq + 1), np.float32), 8)
    return Up(dev, 1, 0, 10, 0.5, seq, 8, scales, q).encode()


def test_anonymous_and_wrong_password_are_refused(fleet: Fleet, peers: list[Peer]) -> None:
    peers.append(anonymous := Peer(fleet, None))
    assert anonymous.connect().getName() == "Not authorized"
    peers.append(wrong := Peer(fleet, "d0000", "not-the-password"))
    assert wrong.connect().getName() == "Not authorized"


def test_device_cannot_post_as_another_device(fleet: Fleet, peers: list[Peer]) -> None:
    """d0000 publishes on d0002's up topic: the real gateway never sees it; d0000's own update gets through."""
    settings = GatewaySettings(
        id="gw0",
        fleet=FLEET,
        broker=f"mqtts://gw0:{fleet.password('gw0')}@127.0.0.1:{fleet.broker.port}",
        token="unused",
        broker_ca=fleet.ca,
    )
    node = GatewayNode.from_settings(settings)
    assert node.start(WAIT), "the gateway could not log in over TLS"
    try:
        task = Task(1, 0, SPEC.layers, SPEC.init(0), 0.1, 1, 8, 8, time.time() + 30, 0.2)
        node.open_sub_round(task)
        peers.append(a := Peer(fleet, "d0000"))
        peers.append(b := Peer(fleet, "d0002"))
        assert a.connect().getName() == "Success" and b.connect().getName() == "Success"
        assert a.subscribe("iotfl/F/gw/gw0/ack/d0000") == [1]
        assert b.subscribe("iotfl/F/gw/gw0/ack/d0002") == [1]
        a.publish("iotfl/F/gw/gw0/up/d0002", up("d0002", seq=7))  # B's topic, B's id in the payload
        a.publish("iotfl/F/gw/gw0/up/d0001", up("d0001", seq=8))  # a device of another gateway
        a.publish("iotfl/F/gw/gw1/up/d0000", up("d0000", seq=9))  # its own id, the wrong gateway
        a.publish("iotfl/F/gw/gw0/up/d0000", up("d0000", seq=1))  # its own topic
        # QoS 1 from one client arrives in order: once the last one is acked, the others would have been too
        acks = [Ack.decode(p) for _, p in [a.messages.get(timeout=WAIT), *a.drain()]]
        assert [(x.status, x.seq) for x in acks] == [("accepted", 1)]
        assert b.drain() == []
        total = node.close_sub_round(journal=False)
        assert (total.k, total.n) == (1, 10)
    finally:
        node.stop()


def test_gateway_cannot_read_another_gateways_subtree(fleet: Fleet, peers: list[Peer]) -> None:
    peers.append(gw0 := Peer(fleet, "gw0"))
    peers.append(gw1 := Peer(fleet, "gw1"))
    peers.append(dev := Peer(fleet, "d0002"))
    for peer in (gw0, gw1, dev):
        assert peer.connect().getName() == "Success"
    # mosquitto 2.0 grants any subscription (SUBACK 1) and checks each delivery against the read rules
    assert gw1.subscribe("iotfl/F/gw/gw0/#") == [1]
    assert gw1.subscribe("iotfl/F/gw/+/up/+") == [1]
    assert gw0.subscribe("iotfl/F/gw/gw0/up/+") == [1]
    gw0.publish("iotfl/F/gw/gw0/task", b"gw0's task")
    gw0.publish("iotfl/F/gw/gw0/ack/d0002", b"gw0's ack")
    dev.publish("iotfl/F/gw/gw0/up/d0002", b"an update for gw0")
    assert gw0.messages.get(timeout=WAIT) == ("iotfl/F/gw/gw0/up/d0002", b"an update for gw0")
    assert gw1.drain() == []


def _handshake(fleet: Fleet, context: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", fleet.broker.port), timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return str(tls.version())


def test_tls_needs_the_fleet_ca(fleet: Fleet, peers: list[Peer], tmp_path: Path) -> None:
    other = tmp_path / "other-ca.crt"
    other.write_text(new_ca("other").cert_pem)
    peers.append(stranger := Peer(fleet, "d0000", ca=other))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        stranger.client.connect("127.0.0.1", fleet.broker.port)
    assert _handshake(fleet, ssl.create_default_context(cafile=str(fleet.ca))) in ("TLSv1.2", "TLSv1.3")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_is_refused_by_the_broker(fleet: Fleet) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(fleet.ca)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that it is not our own OpenSSL that refuses TLS 1.1
    with pytest.raises(ssl.SSLError) as refused:
        _handshake(fleet, context)
    # the broker's alert, not a local refusal (which would be NO_PROTOCOLS_AVAILABLE)
    assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"
