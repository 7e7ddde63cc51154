"""``iotfl ota publish``: a signed image lands retained on a real broker; bad input is one clear line."""

from __future__ import annotations

import hashlib
import hmac
import threading
from pathlib import Path

import msgpack
import paho.mqtt.client as mqtt
from typer.testing import CliRunner

from iotfl.cli import app

runner = CliRunner()
KEY = "ab" * 32


def _retained(port: int, topic: str, timeout: float = 10.0) -> bytes:
    got: list[bytes] = []
    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ota-reader")
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_message = lambda _c, _u, msg: (got.append(msg.payload), ready.set())
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert ready.wait(timeout), f"nothing retained on {topic}"
    finally:
        client.loop_stop()
        client.disconnect()
    return got[0]


def test_publish_signs_and_retains_the_image(mosquitto, tmp_path: Path) -> None:
    key_file = tmp_path / "ota.key"
    key_file.write_text(KEY + "\n")
    src = tmp_path / "fw"
    src.mkdir()
    (src / "main.py").write_text("print('v2')\n")
    (src / "extra.py").write_text("X = 1\n")
    result = runner.invoke(
        app,
        ["ota", "publish", "--version", "2.0.0", "--broker", mosquitto.url, "--key-file", str(key_file),
         "--firmware-dir", str(src), "--serial", "7", "--fleet", "site1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "published firmware 2.0.0 (serial 7)" in result.output
    manifest = msgpack.unpackb(_retained(mosquitto.port, "iotfl/site1/ota/manifest"))
    assert manifest["t"] == "ota"
    assert hmac.compare_digest(manifest["sig"], hmac.new(KEY.encode(), manifest["body"], hashlib.sha256).digest())
    body = msgpack.unpackb(manifest["body"])
    assert (body["version"], body["serial"]) == ("2.0.0", 7)
    names = [f["name"] for f in body["files"]]
    assert names == ["extra.mpy", "main.py"]  # modules compiled, main.py as source
    first = _retained(mosquitto.port, "iotfl/site1/ota/2.0.0/0")
    assert len(first) == min(body["chunk"], body["size"])


def test_missing_key_file_is_one_clear_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ota", "publish", "--version", "1.0", "--key-file", str(tmp_path / "nope.key")])
    assert result.exit_code == 2
    assert "cannot read the OTA key" in result.output and "Traceback" not in result.output
