# The device's side of wire v1, decoding: the envelope every received message shares, and the ack (taskmsg.py
# reads the task; wire.py encodes the status, upmsg.py the up). Small on purpose: it is in the heap whenever the
# device waits for an ack.

from unpack import unpackb

WIRE_VERSION = 1
ACK_STATUSES = ("accepted", "duplicate", "late", "rejected")


def int_field(obj, key, lo=None, hi=None):
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(key + " must be an int in range")
    return v


def envelope(buf, kind):
    obj = unpackb(buf)
    if not isinstance(obj, dict) or int_field(obj, "v", 1, 1) != WIRE_VERSION or obj.get("t") != kind:
        raise ValueError("not a wire v1 " + kind)
    return obj


def decode_ack(buf):
    """Validate an ack message: {round, seq (int or None), status, reason}."""
    if len(buf) > 4096:
        raise ValueError("ack too large")
    obj = envelope(buf, "ack")
    ack = {"status": obj.get("status"), "reason": obj.get("reason")}
    if ack["status"] not in ACK_STATUSES or not isinstance(ack["reason"], str):
        raise ValueError("ack needs a known status and a reason string")
    for key in ("round", "seq"):
        ack[key] = None if obj.get(key) is None else int_field(obj, key)
    return ack
