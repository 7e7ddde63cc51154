# The device's side of wire v1: encode up and status exactly as flcore does, decode and validate task and ack.
#
# write_up() streams the up map through write(buf): scales and q go out straight from their buffers. Keys are
# written in flcore's order with unset optional fields omitted, so the bytes equal flcore's Up(...).encode().
# MicroPython dicts do not keep insertion order, so meta keys are written in a fixed order (the known ones, then
# the rest sorted); flcore receivers read meta by key.

from mlp import check_layers, param_count
from mpack import Packer, Sink, unpackb
from quant import MAX_CHUNK, chunk_count

try:
    import uctypes
except ImportError:
    uctypes = None

WIRE_VERSION = 1
ACK_STATUSES = ("accepted", "duplicate", "late", "rejected")
DEVICE_STATES = ("online", "sleeping", "offline")
META_ORDER = ("battery", "train_ms", "ram_class", "fw")
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def is_valid_id(value):
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        return False
    for ch in value:
        if ch not in _ID_CHARS:
            return False
    return True


def _f32_bytes(arr, count):
    # the raw float32 storage as a byte buffer (little-endian on every supported board); no copy with uctypes
    if uctypes is not None:
        return uctypes.bytearray_at(uctypes.addressof(arr), 4 * count)
    return bytes(memoryview(arr)[:count])


def _fields(p, pairs):
    for key, value in pairs:
        if value is not None:
            p.str(key)
            p.value(value)


def write_up(write, dev, rnd, base, n, loss, seq, chunk, scales, q, sub=0, meta=None, size=None):
    """Stream the up message for q[:size] (int8 bytes) and its ceil(size/chunk) scales (array('f'))."""
    if size is None:
        size = len(q)
    nscales = chunk_count(size, chunk)
    if size > len(q) or nscales > len(scales):
        raise ValueError("up buffers too small")
    p = Packer(write)
    p.map(11 + (1 if sub else 0) + (1 if meta is not None else 0))
    _fields(p, (("v", WIRE_VERSION), ("t", "up"), ("dev", dev), ("round", rnd), ("base", base), ("n", n)))
    _fields(p, (("loss", float(loss)), ("seq", seq), ("chunk", chunk)))
    p.str("scales")
    p.bin_header(4 * nscales)
    p.raw(_f32_bytes(scales, nscales))
    p.str("q")
    p.bin_header(size)
    p.raw(memoryview(q)[:size])
    if sub:
        _fields(p, (("sub", sub),))
    if meta is not None:
        keys = [k for k in META_ORDER if k in meta] + sorted(k for k in meta if k not in META_ORDER)
        p.str("meta")
        p.map(len(keys))
        _fields(p, [(k, meta[k]) for k in keys])


def up_size(dev, rnd, base, n, loss, seq, chunk, scales, q, sub=0, meta=None, size=None):
    """The byte length of write_up's message (an MQTT publish needs it before the payload)."""
    count = Sink()
    write_up(count, dev, rnd, base, n, loss, seq, chunk, scales, q, sub, meta, size)
    return count.n


def status_bytes(dev, state, battery=None, rssi=None, ram_class=None, fw=None, gw=None, rnd=None, sub=None, skip=None):
    """The retained status (also the Last Will with state "offline"), as flcore's Status(...).encode()."""
    if state not in DEVICE_STATES:
        raise ValueError("state must be online, sleeping or offline")
    fields = (("v", WIRE_VERSION), ("t", "status"), ("dev", dev), ("state", state), ("battery", battery))
    fields += (("rssi", rssi), ("ram_class", ram_class), ("fw", fw), ("gw", gw), ("round", rnd), ("sub", sub))
    fields += (("skip", skip),)
    out = bytearray()
    p = Packer(out.extend)
    p.map(sum(1 for _, v in fields if v is not None))
    _fields(p, fields)
    return bytes(out)


def _int(obj, key, lo=None, hi=None):
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(key + " must be an int in range")
    return v


def _finite(obj, key):
    v = obj.get(key)
    # v - v is nan for inf and nan
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v - v != 0:
        raise ValueError(key + " must be a finite number")
    return float(v)


def _fraction(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


def _message(buf, kind):
    obj = unpackb(buf)
    if not isinstance(obj, dict) or _int(obj, "v", 1, 1) != WIRE_VERSION or obj.get("t") != kind:
        raise ValueError("not a wire v1 " + kind)
    return obj


def decode_task(buf):
    """Validate a task message; w is a memoryview into buf (keep buf alive while using it)."""
    obj = _message(buf, "task")
    layers = check_layers(obj.get("layers"))
    params = param_count(layers)
    w = obj.get("w")
    if not isinstance(w, memoryview) or len(w) != 4 * params:
        raise ValueError(f"w must be bin of {4 * params} bytes")
    # a float32 is inf or nan when its exponent bits are all ones (little-endian: bytes 3 and 2)
    for k in range(3, len(w), 4):
        if w[k] & 0x7F == 0x7F and w[k - 1] & 0x80:
            raise ValueError("w holds non-finite values")
    select = obj.get("select")
    if isinstance(select, list):
        for dev in select:
            if not is_valid_id(dev):
                raise ValueError("select lists a bad device id")
    elif select is not None and not _fraction(select):
        raise ValueError("select must be a fraction in 0..1 or a list of device ids")
    done = obj.get("done", False)
    if done is not True and done is not False:
        raise ValueError("done must be a bool")
    task = {"layers": layers, "P": params, "w": w, "select": select, "done": done, "sub": 0}
    if "sub" in obj:
        task["sub"] = _int(obj, "sub", 0)
    for key in ("round", "base", "epochs", "batch", "chunk"):
        task[key] = _int(obj, key, 1 if key in ("batch", "chunk") else 0, _LIMITS.get(key))
    for key in ("lr", "deadline", "min_battery"):
        task[key] = _finite(obj, key)
    return task


_LIMITS = {"epochs": 1000, "batch": 1 << 16, "chunk": MAX_CHUNK}


def decode_ack(buf):
    """Validate an ack message: {round, seq (int or None), status, reason}."""
    if len(buf) > 4096:
        raise ValueError("ack too large")
    obj = _message(buf, "ack")
    ack = {"status": obj.get("status"), "reason": obj.get("reason")}
    if ack["status"] not in ACK_STATUSES or not isinstance(ack["reason"], str):
        raise ValueError("ack needs a known status and a reason string")
    for key in ("round", "seq"):
        ack[key] = None if obj.get(key) is None else _int(obj, key)
    return ack
