"""Rich progress bars for ``iotfl fleet``, fed by the fleet's progress events (``device_sim.fleet``)."""

from __future__ import annotations

import threading
from typing import Any

from rich.progress import Progress


class FleetProgress:
    """Three bars: devices connected, the current round's acknowledged updates, devices that saw ``done``.

    Events arrive from the network loop and the training threads; ``rich`` serialises the bar updates itself and
    the round bookkeeping takes its own lock."""

    def __init__(self, progress: Progress, devices: int):
        self._progress = progress
        self._lock = threading.Lock()
        self._round = 0
        self._acked = 0
        self._connected = progress.add_task("devices connected", total=devices)
        self._updates = progress.add_task("round ?: updates acknowledged", total=devices)
        self._done = progress.add_task("devices done", total=devices)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "connected":
            self._progress.advance(self._connected)
        elif kind == "fleet_connected":
            self._progress.update(self._connected, completed=event["connected"])
        elif kind == "ack" and event.get("status") == "accepted":
            self._ack(int(event["round"]))
        elif kind == "done":
            self._progress.advance(self._done)

    def _ack(self, rnd: int) -> None:
        with self._lock:
            if rnd > self._round:
                self._round, self._acked = rnd, 0
            elif rnd < self._round:
                return  # a late ack of an earlier round: the bar shows the current one
            self._acked += 1
            acked, current = self._acked, self._round
        self._progress.update(self._updates, completed=acked, description=f"round {current}: updates acknowledged")


__all__ = ["FleetProgress"]
