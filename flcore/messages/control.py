"""The small control messages between a gateway and its devices: ``ack`` (the answer to an ``up``) and ``status``
(a device's retained state, also its Last Will)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flcore.schema import WIRE_VERSION, Fields, pack, unpack, without_none
from flcore.topics import is_valid_id

ACK_STATUSES = ("accepted", "duplicate", "late", "rejected")
DEVICE_STATES = ("online", "sleeping", "offline")


@dataclass(frozen=True)
class Ack:
    """The gateway's answer to one ``up``."""

    round: int | None
    seq: int | None
    status: str
    reason: str = ""

    def __post_init__(self) -> None:
        if self.status not in ACK_STATUSES:
            raise ValueError(f"ack status must be one of {ACK_STATUSES}, got {self.status!r}")

    def encode(self) -> bytes:
        return pack(
            {
                "v": WIRE_VERSION,
                "t": "ack",
                "round": self.round,
                "seq": self.seq,
                "status": self.status,
                "reason": self.reason,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Ack:
        f = Fields(unpack(data, "ack", 4096))
        status, reason = f.text("status"), f.text("reason")
        if status not in ACK_STATUSES:
            raise f.fail("schema", f"status {status!r}")
        for key in ("round", "seq"):
            if f.obj.get(key) is not None:
                f.integer(key)
        return cls(f.round, f.seq, status, reason)


@dataclass(frozen=True)
class Status:
    """A device's retained status (also its Last Will with ``state="offline"``).

    Beyond the contract's fields, ``gw`` names the device's gateway and ``round``/``sub``/``skip`` tell the gateway
    that the device declined that task (and why), so a round can close as soon as every live device has answered.
    """

    dev: str
    state: str
    battery: float | None = None
    rssi: int | None = None
    ram_class: str | None = None
    fw: str | None = None
    gw: str | None = None
    round: int | None = None
    sub: int | None = None
    skip: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in DEVICE_STATES:
            raise ValueError(f"state must be one of {DEVICE_STATES}, got {self.state!r}")

    def encode(self) -> bytes:
        return pack(
            without_none(
                [
                    ("v", WIRE_VERSION),
                    ("t", "status"),
                    ("dev", self.dev),
                    ("state", self.state),
                    ("battery", self.battery),
                    ("rssi", self.rssi),
                    ("ram_class", self.ram_class),
                    ("fw", self.fw),
                    ("gw", self.gw),
                    ("round", self.round),
                    ("sub", self.sub),
                    ("skip", self.skip),
                ]
                + sorted(self.extra.items())
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Status:
        f = Fields(unpack(data, "status", 16384))
        dev, state = f.text("dev"), f.text("state")
        if not is_valid_id(dev) or state not in DEVICE_STATES:
            raise f.fail("schema", f"dev {dev!r} / state {state!r}")
        battery = f.finite("battery", optional=True)
        known = {"v", "t", "dev", "state", "battery", "rssi", "ram_class", "fw", "gw", "round", "sub", "skip"}
        extra = {k: v for k, v in f.obj.items() if k not in known and isinstance(k, str)}
        return cls(
            dev,
            state,
            battery,
            f.integer("rssi", optional=True),
            f.text("ram_class", optional=True),
            f.text("fw", optional=True),
            f.text("gw", optional=True),
            f.integer("round", optional=True),
            f.integer("sub", optional=True),
            f.text("skip", optional=True),
            extra,
        )
