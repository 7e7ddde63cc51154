"""mqtts:// from the board: the firmware verifies the broker's certificate against config.json's CA file (PEM, as
``iotfl provision`` copies it) and runs its whole wake over TLS; a broker signed by another CA is refused.
Real MicroPython (mbedTLS), real mosquitto with a TLS listener, certificates made by openssl for the test."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from fw_device import Device, device_config, wait_for, write_samples
from micropython_runner import MicroPythonRunner
from paho.mqtt.enums import CallbackAPIVersion

from flcore.datasets import sensors
from flcore.messages import Task, Up
from flcore.model import ModelSpec
from iotfl.broker import free_port, mosquitto_path, wait_for_port

LAYERS = (10, 16, 5)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(folder: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=folder)  # fmt: skip


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None or mosquitto_path() is None:
        pytest.skip("needs openssl and mosquitto")
    certs = tmp_path / "certs"
    certs.mkdir()
    make_ca(certs, "ca")
    make_ca(certs, "other-ca")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr", cwd=certs)  # fmt: skip
    (certs / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "ext.cnf", "-out", "server.crt", cwd=certs)  # fmt: skip
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", f"cafile {certs / 'ca.crt'}",
             f"certfile {certs / 'server.crt'}", f"keyfile {certs / 'server.key'}"]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        lines.append("user root")  # keep reading the key from the test's private folder
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [str(mosquitto_path()), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port(port, 10, proc)
        yield port, certs
    finally:
        proc.kill()
        proc.wait(5)


def test_a_whole_wake_over_verified_tls(mpy_unix: MicroPythonRunner, tls_broker, tmp_path: Path) -> None:
    port, certs = tls_broker
    seen: list[bytes] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-gateway")
    client.tls_set(ca_certs=str(certs / "ca.crt"))
    client.on_message = lambda c, u, msg: seen.append(bytes(msg.payload))
    client.connect("localhost", port)
    client.loop_start()
    try:
        client.subscribe("iotfl/default/gw/gw0/up/+", 1)
        task = Task(1, 0, LAYERS, ModelSpec(LAYERS).init(0), 0.05, 1, 8, 64, time.time() + 30, 0.1)
        client.publish("iotfl/default/gw/gw0/task", task.encode(), qos=1, retain=True).wait_for_publish(5)
        data = sensors(0, samples=100)
        results = {}
        for ca in ("ca", "other-ca"):
            dev = Device(mpy_unix, tmp_path / ca, heap="128K")
            dev.flash()
            shutil.copy(certs / f"{ca}.crt", dev.folder / "ca.crt")  # PEM, as provisioned
            write_samples(dev.folder, data.x_train[:16], data.y_train[:16])
            broker = {"host": "localhost", "port": port, "tls": True, "ca": "ca.crt"}
            dev.configure(device_config("fw0", port, broker=broker, ack_timeout_ms=500, max_resends=0))
            results[ca] = dev.wake(40)
        wait_for(lambda: seen, timeout=5)
    finally:
        client.loop_stop()
        client.disconnect()
    up = Up.decode(seen[0], params=ModelSpec(LAYERS).param_count, topic_dev="fw0")
    assert (up.round, up.seq, up.n) == (1, 1, 16) and len(seen) == 1
    refused = results["other-ca"]
    assert len(refused) == 1 and refused[0].sleep_ms is not None
    # a certificate problem is not retried: the wake ends at once and the board sleeps until its next try
    assert "wake failed: ValueError('\\nThe certificate is not correctly signed by the trusted CA" in refused[0].stdout
