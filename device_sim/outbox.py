"""The updates a device keeps until its gateway acks them.

The contract's promise (an update a gateway acknowledged is never lost) starts here: the device keeps every update
until an ack for its ``seq`` arrives, whatever tasks come meanwhile. An update for a round the gateway already
closed is answered ``late`` or ``duplicate``, so re-sending it is harmless. Each update has an ack timer; when it
fires while the device is online the update is re-sent with the same ``seq`` (bounded by ``max_resends``); while
the device is offline the timer just starts over. After a reconnect every kept update is re-sent soon (``rearm``):
a broker restarted after ``kill -9`` may have lost what it had acknowledged, and an ack published while this
clean session was away is gone; a re-send the gateway already has is answered ``duplicate``. Those re-sends do not
count against ``max_resends``.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass

from device_sim.netloop import TimerHandle

log = logging.getLogger(__name__)


@dataclass
class Pending:
    """An update waiting for its ack; ``sends`` counts the first send and the re-sends."""

    seq: int
    round: int
    sub: int
    payload: bytes
    sends: int = 1
    timer: TimerHandle | None = None
    armed: int = 0  # counts (re)arms: a timer that fires after a re-arm is stale


class Outbox:
    """Kept updates by ``seq``, each with an ack timer on the device's network loop (``call_later``, e.g.
    ``NetLoop.call_later``: a heap entry, not a thread per timer); thread-safe."""

    def __init__(
        self,
        ack_timeout: float,
        max_resends: int,
        *,
        call_later: Callable[..., TimerHandle],
        online: Callable[[], bool],
        resend: Callable[[Pending], None],
        give_up: Callable[[Pending], None],
    ):
        self.ack_timeout = ack_timeout
        self.max_resends = max_resends
        self._call_later, self._online, self._resend, self._give_up = call_later, online, resend, give_up
        self._items: dict[int, Pending] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def add(self, pending: Pending) -> None:
        """Keep ``pending`` (already sent once) and start its ack timer."""
        with self._lock:
            if self._closed:
                return
            self._items[pending.seq] = pending
            self._arm(pending)

    def settle(self, seq: int) -> Pending | None:
        """The update an ack for ``seq`` answers (dropped from the outbox), or None when none is kept."""
        with self._lock:
            pending = self._items.pop(seq, None)
            if pending is not None and pending.timer is not None:
                pending.timer.cancel()
            return pending

    def rearm(self, within: float) -> None:
        """After a reconnect: re-send every kept update at a random moment in the next ``within`` seconds (spread,
        so a fleet that reconnects together does not re-send together), then wait a full ack window again."""
        with self._lock:
            for pending in self._items.values():
                self._arm(pending, delay=random.uniform(0.0, within), bonus=True)

    def close(self) -> list[Pending]:
        """Stop every timer and keep nothing more; returns what was still unacked."""
        with self._lock:
            self._closed = True
            left = list(self._items.values())
            self._items.clear()
        for pending in left:
            if pending.timer is not None:
                pending.timer.cancel()
        return left

    def _arm(self, pending: Pending, delay: float | None = None, bonus: bool = False) -> None:
        """(Re)start ``pending``'s ack timer; a ``bonus`` re-send does not count against ``max_resends``. The caller
        holds the lock."""
        if pending.timer is not None:
            pending.timer.cancel()
        wait = self.ack_timeout if delay is None else delay
        pending.armed += 1
        pending.timer = self._call_later(wait, self._timeout, pending.seq, bonus, pending.armed)

    def _timeout(self, seq: int, bonus: bool, armed: int) -> None:
        with self._lock:
            pending = self._items.get(seq)
            if self._closed or pending is None or pending.armed != armed:
                return  # settled, or re-armed since this timer started
            if not self._online():
                self._arm(pending)  # a send now would only queue inside paho; wait for the reconnect
                return
            if bonus:
                self._arm(pending)
                gave_up = False
            elif pending.sends > self.max_resends:
                del self._items[seq]
                gave_up = True
            else:
                pending.sends += 1
                gave_up = False
                self._arm(pending)
        if gave_up:
            log.warning("no ack for seq %d (round %d) after %d sends; giving up", seq, pending.round, pending.sends)
            self._give_up(pending)
        else:
            log.info("no ack for seq %d within %.1f s; re-sending", seq, self.ack_timeout)
            self._resend(pending)


__all__ = ["Outbox", "Pending"]
