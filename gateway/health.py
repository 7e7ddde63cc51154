"""The gateway's status file: ``<state_dir>/<gw>-status.json``, what a monitoring agent (or a test) reads.

It is rewritten atomically (a temporary file renamed over it) when something in it changes, at most every
``MIN_INTERVAL`` seconds apart from changes of the round or the outbox, and at least every ``MAX_INTERVAL`` seconds
so its ``updated_at`` shows the gateway is alive. Keys: ``gw``, ``round`` (the global round being collected or last
forwarded), ``mqtt_connected``, ``cloud_reachable``, ``outbox_depth`` (posts waiting for the cloud),
``outbox_oldest_s``, ``broker_dropped`` (the broker's ``$SYS`` counter, null when unavailable),
``broker_dropped_seen`` (drops since this gateway started), ``forwarded``, ``refused``, ``counters`` (ack statuses and
reject reasons), ``devices`` (live devices), ``updated_at`` (unix seconds).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MIN_INTERVAL = 1.0
MAX_INTERVAL = 30.0
URGENT = ("round", "outbox_depth")


def status_path(state_dir: Path, gw: str) -> Path:
    return Path(state_dir) / f"{gw}-status.json"


class HealthFile:
    """Writes the status snapshots it is given, skipping ones that change nothing (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: dict[str, Any] | None = None
        self._written_at = 0.0
        self._lock = threading.Lock()

    def update(self, snapshot: dict[str, Any]) -> bool:
        """Write ``snapshot`` (plus ``updated_at``) when due; True when the file was written."""
        now = time.monotonic()
        with self._lock:
            last = self._last
            urgent = last is None or any(last.get(k) != snapshot.get(k) for k in URGENT)
            changed = snapshot != last
            age = now - self._written_at
            if not (urgent or (changed and age >= MIN_INTERVAL) or age >= MAX_INTERVAL):
                return False
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".json.tmp")
                tmp.write_text(json.dumps({**snapshot, "updated_at": round(time.time(), 3)}, sort_keys=True))
                os.replace(tmp, self.path)
            except OSError as exc:
                log.warning("cannot write the status file %s: %s", self.path, exc)
                return False
            self._last, self._written_at = dict(snapshot), now
            return True


def read_status(path: Path) -> dict[str, Any] | None:
    """The status a gateway last wrote, or None when there is none yet."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


__all__ = ["HealthFile", "read_status", "status_path"]
