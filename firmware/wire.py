# The device's side of wire v1, encoding the status exactly as flcore's Status(...).encode() (upmsg.py encodes
# the up message, decode.py reads task and ack): the network phase loads only what it sends.

from mpack import Packer

WIRE_VERSION = 1
DEVICE_STATES = ("online", "sleeping", "offline")


def _fields(p, args):
    for key, value in args:
        if value is not None:
            p.str(key)
            p.value(value)


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
