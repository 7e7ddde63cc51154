"""Firmware OTA under the real MicroPython, the test publishing images over a real mosquitto with iotfl.ota:
a good image is installed and runs after the reboot; a tampered one (signature, SHA-256) is refused and nothing
changes; a broken one (main.py raises) is rolled back after max_boots boots."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fw_device import Boot, Device, Observer, device_config
from micropython_runner import FIRMWARE, MicroPythonRunner

from iotfl.broker import Broker
from iotfl.ota import OtaImage, build_image, image_files, publish_image

KEY = "fleet-ota-key-for-tests-0001"
STATUS = "iotfl/default/dev/fw0/status"
MARK = b"print('FW-MARK 0.2.0')\n"


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.suffix in (".py", ".mpy")}


@pytest.fixture
def device(mpy_unix: MicroPythonRunner, mosquitto: Broker, tmp_path: Path) -> Device:
    dev = Device(mpy_unix, tmp_path / "fw0", heap="128K")
    dev.flash()
    dev.configure(device_config("fw0", mosquitto.port, ota={"key": KEY, "max_boots": 3}, task_wait_ms=300))
    return dev


@pytest.fixture
def observer(mosquitto: Broker):
    obs = Observer(mosquitto.port, [STATUS])
    yield obs
    obs.close()


def new_files(main: bytes | None = None) -> dict[str, bytes]:
    files = image_files(FIRMWARE)
    files["main.py"] = main if main is not None else MARK + files["main.py"]
    files["hello.py"] = b"GREETING = 'hello from 0.2.0'\n"
    return files


def wakes(dev: Device, n: int) -> list[Boot]:
    return [boot for _ in range(n) for boot in dev.wake(30)]


def out(boots: list[Boot]) -> str:
    return "\n".join(b.stdout for b in boots)


def test_a_good_image_is_installed_and_runs(device: Device, mosquitto: Broker, observer: Observer) -> None:
    files = new_files()
    image = build_image(files, "0.2.0", KEY, serial=7)
    publish_image(mosquitto.url, image)
    boots = wakes(device, 2)
    text = out(boots)
    assert f"ota: downloading 0.2.0 {image.size} bytes in {len(image.chunks)} chunks" in text
    assert "ota: installed 0.2.0 on trial for 3 boots" in text and "FW-MARK 0.2.0" in text
    assert "firmware 0.2.0 reached the broker: update kept" in text
    for name, data in files.items():
        assert (device.folder / name).read_bytes() == data
    assert device.state("ota.json") == {"state": "ok", "version": "0.2.0", "serial": 7, "bad": []}
    assert observer.last_status(STATUS, fw="0.2.0").fw == "0.2.0"
    assert not (device.folder / "ota_new").exists() or not any((device.folder / "ota_new").iterdir())
    # later wakes run the new firmware and do not download it again
    again = out(wakes(device, 1))
    assert "FW-MARK 0.2.0" in again and "ota:" not in again


@pytest.mark.parametrize("tamper", ["signature", "sha256"])
def test_a_tampered_image_is_refused(device: Device, mosquitto: Broker, observer: Observer, tamper: str) -> None:
    before = snapshot(device.folder)
    if tamper == "signature":
        image = build_image(new_files(), "0.2.0", "a-key-the-fleet-does-not-have", serial=7)
    else:
        good = build_image(new_files(), "0.2.0", KEY, serial=7)
        chunks = list(good.chunks)
        chunks[2] = bytes([chunks[2][0] ^ 0x01]) + chunks[2][1:]  # one bit of one chunk
        image = OtaImage(good.version, good.serial, good.manifest, tuple(chunks), good.files)
    publish_image(mosquitto.url, image)
    text = out(wakes(device, 2))
    expected = "ota: refused the manifest: signature" if tamper == "signature" else "ota: refused 0.2.0: sha256 "
    assert expected in text and "installed" not in text and "FW-MARK" not in text
    assert snapshot(device.folder) == before
    assert device.state("ota.json").get("state") is None  # nothing staged
    assert observer.last_status(STATUS, fw="0.1.0").fw == "0.1.0"
    # refused once, not fetched again on the next wakes
    assert "ota:" not in out(wakes(device, 1))


def test_a_broken_image_rolls_back_after_max_boots(device: Device, mosquitto: Broker, observer: Observer) -> None:
    before = {p.name: p.read_bytes() for p in device.folder.iterdir() if p.suffix in (".py", ".mpy")}
    publish_image(
        mosquitto.url, build_image(new_files(b"raise RuntimeError('broken build')\n"), "0.2.0", KEY, serial=7)
    )
    boots: list[Boot] = []
    for _ in range(6):
        boots += device.wake(30)
        if "rolled back" in out(boots):
            break
    text = out(boots)
    assert text.count("ota: the new firmware failed: RuntimeError('broken build',)") == 3
    assert "ota: rolled back from 0.2.0 to 0.1.0" in text
    after = {p.name: p.read_bytes() for p in device.folder.iterdir() if p.suffix in (".py", ".mpy")}
    assert after == before  # hello.py, which the image added, is gone too
    assert device.state("ota.json") == {"state": "ok", "version": "0.1.0", "serial": 7, "bad": ["0.2.0"]}
    assert observer.last_status(STATUS, fw="0.1.0").fw == "0.1.0"
    assert "ota:" not in out(wakes(device, 1))  # the bad image is not installed again
