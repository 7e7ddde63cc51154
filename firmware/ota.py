# Firmware OTA over MQTT: a signed manifest, chunks fetched one at a time, files staged and SHA-256 checked.
#
# iotfl/<fleet>/ota/manifest (retained): msgpack {v: 1, t: "ota", body: bin, sig: bin} with
#   sig = HMAC-SHA256(fleet OTA key, body) and body = msgpack {version, serial, chunk, chunks, size,
#   files: [{name, size, sha256 (bin 32)}]}.
# iotfl/<fleet>/ota/<version>/<i> (retained): bytes [i*chunk, (i+1)*chunk) of the files concatenated in
#   manifest order.
# A verified image is staged in ota_new/ and ota.json says "pending"; boot.py swaps it in on the next boot,
# counts trial boots and rolls back when the new code does not reach the broker within max_boots boots.
import binascii
import hashlib
import os

import unpack
from store import MANIFEST, read_json, remove, write_json

STATE = "ota.json"
STAGING = "ota_new"
BACKUP = "ota_old"
# never replaced over the air: the swap/rollback logic, the board's identity and the device's state
PROTECTED = ("boot.py", "config.json", "state.json", "pending.up", STATE)
MAX_FILES = 64
MAX_SIZE = 1 << 20


class OTAError(Exception):
    """An image refused; ``permanent`` (bad signature, hash, size) means never try this serial again."""

    def __init__(self, reason, permanent=True):
        super().__init__(reason)
        self.permanent = permanent


def manifest_topic(fleet):
    return "iotfl/" + fleet + "/ota/manifest"


def chunk_topic(fleet, version, i):
    return "iotfl/" + fleet + "/ota/" + version + "/" + str(i)


def hmac_sha256(key, msg):
    """HMAC-SHA256 (RFC 2104) over hashlib.sha256: MicroPython has no hmac module."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def _same(a, b):
    # constant time: a forged signature must not be found byte by byte from timing
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


def _safe_name(name):
    if not isinstance(name, str) or not 1 <= len(name) <= 64 or name[0] == "." or name in PROTECTED:
        return False
    for ch in name:
        if not (ch.isalpha() or ch.isdigit() or ch in "._-") or ord(ch) > 127:
            return False
    return True


def _safe_version(v):
    return isinstance(v, str) and 1 <= len(v) <= 32 and _safe_name(v)


def read_state():
    return read_json(STATE) or {}


def write_state(obj):
    write_json(STATE, obj)


def _clear_dir(path):
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        remove(path + "/" + name)
    try:
        os.rmdir(path)
    except OSError:
        pass


def check_manifest(payload, key, running):
    """The verified manifest body (dict) of a newer image, None when there is nothing new; OTAError otherwise."""
    try:
        msg = unpack.unpackb(payload)
    except ValueError:
        raise OTAError("decode") from None
    if not isinstance(msg, dict) or msg.get("v") != 1 or msg.get("t") != "ota":
        raise OTAError("version")
    body, sig = msg.get("body"), msg.get("sig")
    if not isinstance(body, memoryview) or not isinstance(sig, memoryview) or len(sig) != 32:
        raise OTAError("schema")
    if not _same(hmac_sha256(key, body), sig):
        raise OTAError("signature")
    try:
        m = unpack.unpackb(body)
    except ValueError:
        raise OTAError("decode") from None
    if not isinstance(m, dict):
        raise OTAError("schema")
    version, serial, files = m.get("version"), m.get("serial"), m.get("files")
    chunk, chunks, size = m.get("chunk"), m.get("chunks"), m.get("size")
    for v in (serial, chunk, chunks, size):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise OTAError("schema")
    if not _safe_version(version) or not isinstance(files, list) or not 1 <= len(files) <= MAX_FILES:
        raise OTAError("schema")
    if not 64 <= chunk <= 16384 or size > MAX_SIZE or chunks != (size + chunk - 1) // chunk:
        raise OTAError("schema")
    total = 0
    names = []
    for f in files:
        if not isinstance(f, dict) or not _safe_name(f.get("name")) or f["name"] in names:
            raise OTAError("schema")
        digest, n = f.get("sha256"), f.get("size")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise OTAError("schema")
        if not isinstance(digest, memoryview) or len(digest) != 32:
            raise OTAError("schema")
        f["sha256"] = bytes(digest)
        names.append(f["name"])
        total += n
    if total != size:
        raise OTAError("schema")
    st = read_state()
    if serial <= st.get("serial", 0) or version == running:
        return None  # this image or a newer one is already installed (or a replayed old manifest)
    if version in st.get("bad", ()) or serial == st.get("refused"):
        return None  # rolled back or refused once: do not loop on a broken image
    return m


def refuse(manifest):
    """Remember an image that failed its checks, so it is not downloaded again."""
    st = read_state()
    st["refused"] = manifest["serial"]
    write_state(st)


class Download:
    """Receive the image chunk by chunk into STAGING, hashing each file as it is written."""

    def __init__(self, manifest):
        self.m = manifest
        self.index = 0  # file being written
        self.written = 0  # bytes of that file written
        self.f = None
        self.h = None
        self.expect = 0  # next chunk index
        self.error = None

    def start(self):
        _clear_dir(STAGING)
        os.mkdir(STAGING)
        self._open()

    def _open(self):
        files = self.m["files"]
        while self.index < len(files):
            self.f = open(STAGING + "/" + files[self.index]["name"], "wb")
            self.h = hashlib.sha256()
            self.written = 0
            if files[self.index]["size"] > 0:
                return
            self._finish_file()

    def _finish_file(self):
        entry = self.m["files"][self.index]
        self.f.close()
        self.f = None
        if not _same(self.h.digest(), entry["sha256"]):
            raise OTAError("sha256 " + entry["name"])
        self.index += 1

    def receive(self, data):
        """The next chunk arrived (from the MQTT callback: errors are kept in .error, not raised)."""
        if self.error is None:
            try:
                self.on_chunk(self.expect, data)
            except OTAError as exc:
                self.error = exc
            except OSError as exc:
                self.error = OTAError("write: " + repr(exc), False)

    def on_chunk(self, i, data):
        """Write chunk i (must be the expected one and of the expected length)."""
        m = self.m
        if i != self.expect:
            return False
        want = min(m["chunk"], m["size"] - i * m["chunk"])
        if len(data) != want:
            raise OTAError(f"chunk {i} has {len(data)} bytes, expected {want}")
        mv = memoryview(data)
        pos = 0
        while pos < len(mv):
            entry = m["files"][self.index]
            take = min(entry["size"] - self.written, len(mv) - pos)
            piece = mv[pos : pos + take]
            self.f.write(piece)
            self.h.update(piece)
            self.written += take
            pos += take
            if self.written == entry["size"]:
                self._finish_file()
                self._open()
        self.expect += 1
        return True

    def complete(self):
        return self.expect == self.m["chunks"] and self.index == len(self.m["files"])

    def abort(self):
        if self.f is not None:
            self.f.close()
            self.f = None
        _clear_dir(STAGING)

    def stage(self, prev_version, max_boots):
        """Mark the verified image for boot.py to swap in on the next boot."""
        st = read_state()
        st.update(
            {
                "state": "pending",
                "version": self.m["version"],
                "serial": self.m["serial"],
                "prev": prev_version,
                "prev_serial": st.get("serial", 0),
                "files": [f["name"] for f in self.m["files"]],
                "boots": 0,
                "max_boots": max_boots,
            }
        )
        write_state(st)


def run(cfg, st, running):
    """The OTA phase of a wake: check the manifest node.py saved; download, verify and stage a newer image.
    Returns "reset" when an image is staged (boot.py installs it), else None."""
    from link import Link

    with open(MANIFEST, "rb") as f:
        raw = f.read()
    seen = binascii.hexlify(hashlib.sha256(raw).digest()).decode()
    try:
        m = check_manifest(raw, cfg["ota"]["key"].encode(), running)
    except OTAError as exc:
        print("iotfl: ota: refused the manifest:", exc.args[0])
        st.set(ota_seen=seen)
        return None
    raw = None
    if m is None:
        st.set(ota_seen=seen)
        return None
    print("iotfl: ota: downloading", m["version"], m["size"], "bytes in", m["chunks"], "chunks")
    d = Download(m)
    box = [None]  # the chunk topic being fetched

    def on_msg(topic, msg):
        if topic == box[0]:
            d.receive(msg)

    link = Link(cfg, on_msg, rx=bytearray(m["chunk"]))
    try:
        link.connect()
        d.start()
        for i in range(m["chunks"]):
            box[0] = chunk_topic(cfg["fleet"], m["version"], i).encode()
            link.bounded(link.client.subscribe, box[0], 1)
            want = i + 1
            got = link.pump(cfg["ota"]["chunk_timeout_ms"], lambda: d.expect >= want or d.error is not None)  # noqa: B023
            link.bounded(link.client.unsubscribe, box[0])
            if d.error is not None:
                raise d.error
            if not got:
                raise OTAError(f"chunk {i} did not arrive", False)
        if not d.complete():
            raise OTAError("incomplete image")
    except OTAError as exc:
        d.abort()
        if exc.permanent:
            refuse(m)
            st.set(ota_seen=seen)
        else:
            st.set(ota_wait=st.get("boots") + 3)  # try again a few wakes later
        print("iotfl: ota: refused", m["version"] + ":", exc.args[0])
        return None
    finally:
        link.close(True)
    d.stage(running, cfg["ota"]["max_boots"])
    st.set(ota_seen=seen)
    print("iotfl: ota: staged", m["version"], "- rebooting to install it")
    return "reset"
