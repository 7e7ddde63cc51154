"""The latest retained status of each of this gateway's devices, for its reports to the cloud (``gateway.reporter``).

Each change gets the next sequence number, so a report carries only the statuses that changed since the last one the
cloud took. A device is this gateway's while its status names it; an ``offline`` Last Will (which names no gateway)
or a cleared status is kept for a device that was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flcore.messages import Status


@dataclass
class DeviceLog:
    gw: str
    seq: int = 0
    entries: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def on_status(self, dev: str, status: Status | None, now: float) -> None:
        """Apply a device's latest retained status (None: the retained message was cleared)."""
        if status is not None and status.gw not in (None, self.gw):
            self.entries.pop(dev, None)  # it moved: its new gateway reports it
            return
        if dev not in self.entries and (status is None or status.gw is None):
            return  # another gateway's device going offline, or one never seen
        self.seq += 1
        if status is None:
            status = Status(dev, "offline")
        self.entries[dev] = (
            self.seq,
            {
                "dev": dev,
                "state": status.state,
                "battery": status.battery,
                "rssi": status.rssi,
                "ram_class": status.ram_class,
                "fw": status.fw,
                "updated_at": round(now, 3),
            },
        )

    def changed_since(self, seq: int) -> list[dict[str, Any]]:
        """The statuses that changed after ``seq`` (0: all of them)."""
        return [entry for at, entry in self.entries.values() if at > seq]


__all__ = ["DeviceLog"]
