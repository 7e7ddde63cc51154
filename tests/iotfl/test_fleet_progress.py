"""The bars of ``iotfl fleet`` follow the fleet's progress events."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from iotfl.fleet_progress import FleetProgress


def counts(progress: Progress) -> dict[str, tuple[float, float | None]]:
    return {task.description: (task.completed, task.total) for task in progress.tasks}


def test_bars_count_connections_acks_of_the_current_round_and_done_devices() -> None:
    with Progress(console=Console(file=io.StringIO())) as progress:
        bars = FleetProgress(progress, devices=3)
        for dev in ("d0", "d1"):
            bars({"event": "connected", "dev": dev})
        bars({"event": "fleet_connected", "connected": 3, "devices": 3})
        bars({"event": "ack", "dev": "d0", "round": 1, "status": "accepted"})
        bars({"event": "ack", "dev": "d1", "round": 1, "status": "duplicate"})  # not counted twice
        bars({"event": "ack", "dev": "d0", "round": 2, "status": "accepted"})
        bars({"event": "ack", "dev": "d1", "round": 2, "status": "accepted"})
        bars({"event": "ack", "dev": "d2", "round": 1, "status": "accepted"})  # late: the bar shows round 2
        bars({"event": "done", "dev": "d0"})
        bars({"event": "up", "dev": "d0", "round": 2})  # other events leave the bars alone
        assert counts(progress) == {
            "devices connected": (3, 3),
            "round 2: updates acknowledged": (2, 3),
            "devices done": (1, 3),
        }
