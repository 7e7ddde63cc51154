"""OTA images: the host builder (iotfl.ota) and the firmware's checks of what it builds, under MicroPython."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import msgpack
import pytest
from micropython_runner import MicroPythonRunner

from iotfl.ota import build_image, chunk_topic, manifest_topic

KEY = "fleet-ota-key-for-tests-0001"

SCRIPT = """
import json, binascii, ota
from store import write_json
cases = json.load(open("cases.json"))
out = {"hmac": [], "manifests": []}
for key, msg in cases["hmac"]:
    out["hmac"].append(binascii.hexlify(ota.hmac_sha256(binascii.unhexlify(key), binascii.unhexlify(msg))).decode())
for state, running, payload in cases["manifests"]:
    write_json("ota.json", state)
    try:
        m = ota.check_manifest(binascii.unhexlify(payload), cases["key"].encode(), running)
        out["manifests"].append(None if m is None else [m["version"], m["serial"], [f["name"] for f in m["files"]]])
    except ota.OTAError as exc:
        out["manifests"].append("refused: " + exc.args[0])
print(json.dumps(out))
"""


def test_firmware_verifies_what_the_host_signs(mpy: MicroPythonRunner, tmp_path: Path) -> None:
    keys = [b"k" * 16, b"a-much-longer-key-than-the-sha256-block-of-64-bytes-" * 2, bytes(range(64))]
    messages = [b"", b"body", bytes(range(256)) * 5]
    hmac_cases = [[k.hex(), m.hex()] for k in keys for m in messages]
    files = {"main.py": b"print('x')\n", "node.mpy": bytes(range(256)) * 9}
    good = build_image(files, "0.2.0", KEY, serial=9, chunk=512)
    forged = build_image(files, "0.2.0", "someone-else-entirely-0000", serial=9)
    body = msgpack.unpackb(good.manifest)["body"]
    unsigned = msgpack.packb({"v": 1, "t": "ota", "body": body, "sig": bytes(32)})
    renamed = _body(body, name="boot.py")  # signed with the right key, still never installed
    boot_py = msgpack.packb(
        {"v": 1, "t": "ota", "body": renamed, "sig": hmac.new(KEY.encode(), renamed, "sha256").digest()}
    )
    manifests = [
        [{}, "0.1.0", good.manifest.hex()],
        [{}, "0.2.0", good.manifest.hex()],  # already running it
        [{"serial": 9}, "0.1.0", good.manifest.hex()],  # a replay: not newer than the last image
        [{"refused": 9}, "0.1.0", good.manifest.hex()],
        [{"bad": ["0.2.0"]}, "0.1.0", good.manifest.hex()],  # rolled back once
        [{}, "0.1.0", forged.manifest.hex()],
        [{}, "0.1.0", unsigned.hex()],
        [{}, "0.1.0", boot_py.hex()],
        [{}, "0.1.0", b"\x81\xa1v\x02".hex()],
    ]
    (tmp_path / "cases.json").write_text(json.dumps({"key": KEY, "hmac": hmac_cases, "manifests": manifests}))
    result = mpy.run_json(SCRIPT, heap="256K", cwd=tmp_path, timeout=60)
    assert result["hmac"] == [hmac.new(k, m, hashlib.sha256).hexdigest() for k in keys for m in messages]
    assert result["manifests"] == [
        ["0.2.0", 9, ["main.py", "node.mpy"]],
        None,
        None,
        None,
        None,
        "refused: signature",
        "refused: signature",
        "refused: schema",
        "refused: version",
    ]
    assert len(good.chunks) == -(-(11 + 256 * 9) // 512) and b"".join(good.chunks) == b"".join(files.values())


def _body(body: bytes, name: str) -> bytes:
    m = msgpack.unpackb(body)
    m["files"][0]["name"] = name
    return msgpack.packb(m)


def test_the_host_never_signs_boot_py() -> None:
    with pytest.raises(ValueError, match="cannot go over the air"):
        build_image({"boot.py": b""}, "1.0", KEY)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "1.0/evil"}, "must match"),
        ({"key": "short"}, "at least 16 bytes"),
        ({"chunk": 10}, "chunk must be in 64..16384"),
        ({"files": {}}, "1..64 files"),
        ({"files": {"../x.py": b""}}, "cannot go over the air"),
        ({"files": {"config.json": b"{}"}}, "cannot go over the air"),
        ({"serial": 0}, "positive integer"),
    ],
)
def test_the_host_refuses_bad_images(kwargs: dict, message: str) -> None:
    args = {"files": {"main.py": b"x"}, "version": "1.0", "key": KEY}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_image(args.pop("files"), args.pop("version"), args.pop("key"), **args)


def test_topics() -> None:
    assert manifest_topic("default") == "iotfl/default/ota/manifest"
    assert chunk_topic("plant-7", "0.2.0", 12) == "iotfl/plant-7/ota/0.2.0/12"
