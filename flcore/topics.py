"""MQTT topic names of the contract, and parsing of the ones a gateway receives on."""

from __future__ import annotations

import re
from dataclasses import dataclass

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
ROOT = "iotfl"


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def check_id(value: str, what: str = "id") -> str:
    if not is_valid_id(value):
        raise ValueError(f"{what} {value!r} must match [A-Za-z0-9_-]{{1,64}}")
    return value


@dataclass(frozen=True)
class GatewayTopics:
    """The topics of one gateway of one fleet."""

    fleet: str
    gw: str

    def __post_init__(self) -> None:
        check_id(self.fleet, "fleet")
        check_id(self.gw, "gateway id")

    @property
    def prefix(self) -> str:
        return f"{ROOT}/{self.fleet}/gw/{self.gw}"

    @property
    def task(self) -> str:
        return f"{self.prefix}/task"

    @property
    def up_wildcard(self) -> str:
        return f"{self.prefix}/up/+"

    def up(self, dev: str) -> str:
        return f"{self.prefix}/up/{check_id(dev, 'device id')}"

    def ack(self, dev: str) -> str:
        return f"{self.prefix}/ack/{check_id(dev, 'device id')}"

    @property
    def ack_wildcard(self) -> str:
        """Every device's ack topic of this gateway (what the batched simulator's shared connection reads)."""
        return f"{self.prefix}/ack/+"

    def device_of_ack(self, topic: str) -> str | None:
        """The ``<dev>`` of an ``ack`` topic of this gateway, or None when it is not a valid one."""
        head = f"{self.prefix}/ack/"
        dev = topic[len(head) :] if topic.startswith(head) else None
        return dev if is_valid_id(dev) else None

    def device_of(self, topic: str) -> str | None:
        """The ``<dev>`` of an ``up`` topic of this gateway, or None when it is not a valid one."""
        head = f"{self.prefix}/up/"
        if not topic.startswith(head):
            return None
        dev = topic[len(head) :]
        return dev if is_valid_id(dev) else None


def status_topic(fleet: str, dev: str) -> str:
    return f"{ROOT}/{check_id(fleet, 'fleet')}/dev/{check_id(dev, 'device id')}/status"


def status_wildcard(fleet: str) -> str:
    return f"{ROOT}/{check_id(fleet, 'fleet')}/dev/+/status"


def device_of_status(fleet: str, topic: str) -> str | None:
    parts = topic.split("/")
    if len(parts) != 5 or parts[:3] != [ROOT, fleet, "dev"] or parts[4] != "status":
        return None
    return parts[3] if is_valid_id(parts[3]) else None
