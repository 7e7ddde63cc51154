"""The updates of a batched fleet waiting for their acks: ``device_sim.outbox`` for thousands of devices.

Same promise and rules as ``Outbox`` (keep until acked, re-send the same bytes after ``ack_timeout`` while online,
give up after ``max_resends`` re-sends, spread "bonus" re-sends after a reconnect that do not count), but one
deadline per update checked by the fleet's own loop (``due``) instead of a timer thread per update: 10,000
threads would cost more than the training.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(eq=False)
class Kept:
    """An update of device ``dev`` (on gateway ``gw``) waiting for its ack; ``sends`` counts every send."""

    dev: str
    gw: str
    seq: int
    round: int
    sub: int
    payload: bytes
    due: float
    sends: int = 1
    bonus: bool = False


class SharedOutbox:
    """Kept updates by (dev, seq); thread-safe (acks settle from network threads)."""

    def __init__(self, ack_timeout: float, max_resends: int, rng: random.Random | None = None) -> None:
        self.ack_timeout = ack_timeout
        self.max_resends = max_resends
        self._items: dict[tuple[str, int], Kept] = {}
        self._lock = threading.Lock()
        self._rng = rng or random.Random()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, kept: Kept) -> None:
        """Keep ``kept`` (already sent once, ``kept.due`` = when to re-send)."""
        with self._lock:
            self._items[(kept.dev, kept.seq)] = kept

    def settle(self, dev: str, seq: int) -> Kept | None:
        """The update an ack answers (dropped from the outbox), or None when none is kept."""
        with self._lock:
            return self._items.pop((dev, seq), None)

    def rearm(self, gw: str, within: float, now: float) -> None:
        """After gateway ``gw``'s connection came back: re-send its kept updates at random moments in ``within``."""
        with self._lock:
            for kept in self._items.values():
                if kept.gw == gw:
                    kept.due, kept.bonus = now + self._rng.uniform(0.0, within), True

    def due(self, now: float, online: Callable[[str], bool]) -> tuple[list[Kept], list[Kept]]:
        """What to re-send now and what to give up on; an update whose gateway link is down just waits again."""
        resend: list[Kept] = []
        gave_up: list[Kept] = []
        with self._lock:
            for key, kept in list(self._items.items()):
                if kept.due > now:
                    continue
                kept.due = now + self.ack_timeout
                if not online(kept.gw):
                    continue
                if kept.bonus:
                    kept.bonus = False
                elif kept.sends > self.max_resends:
                    del self._items[key]
                    gave_up.append(kept)
                    continue
                else:
                    kept.sends += 1
                resend.append(kept)
        return resend, gave_up


__all__ = ["Kept", "SharedOutbox"]
