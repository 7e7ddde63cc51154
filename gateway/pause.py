"""A test hook, off by default: hold the gateway at one named point so a fault test can ``kill -9`` it there.

``pause_at`` (``IOTFL_PAUSE_AT``) is ``POINT`` or ``POINT@N`` (the N-th time the point is reached, default 1):

- ``before_journal``: an update passed validation, nothing is committed yet (the receive → ack window);
- ``before_ack``: the update is committed to the journal, its ``accepted`` ack is not published yet;
- ``before_forward``: the round closed and its last sub-round is journaled, its aggregate is not in the outbox yet
  (the ack → forward window);
- ``before_post``: the aggregate is in the outbox, its first post has not been attempted.

While a pause is set the gateway ingests updates in batches of one (see ``GatewayNode``), so ``@N`` counts
updates: at ``before_journal@3`` exactly two updates are committed.

The gateway logs ``PAUSED at <point>`` and holds that thread for ``PAUSE_HOLD`` seconds (bounded, so a forgotten
setting slows a gateway down but never hangs it), then carries on.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

POINTS = ("before_journal", "before_ack", "before_forward", "before_post")
PAUSE_HOLD = 60.0


def parse_pause(spec: str) -> tuple[str, int] | None:
    """``(point, n)`` from ``POINT[@N]``; None for an empty spec; ``ValueError`` for anything else."""
    spec = spec.strip()
    if not spec:
        return None
    point, _, nth = spec.partition("@")
    if point not in POINTS or (nth and (not nth.isdigit() or int(nth) < 1)):
        raise ValueError(f"pause_at {spec!r} must be one of {', '.join(POINTS)}, optionally followed by @N (N ≥ 1)")
    return point, int(nth) if nth else 1


class Pause:
    """Where the gateway should hold, and how often each point has been reached."""

    def __init__(self, spec: str = "", hold: float = PAUSE_HOLD) -> None:
        self.target = parse_pause(spec)
        self.hold = hold
        self._reached = 0
        self._lock = threading.Lock()

    def reached(self, point: str, stop: threading.Event | None = None) -> None:
        """Hold here when ``point`` is the configured one and this is its N-th arrival."""
        if self.target is None or point != self.target[0]:
            return
        with self._lock:
            self._reached += 1
            if self._reached != self.target[1]:
                return
        log.warning("PAUSED at %s (test hook pause_at): holding for %.0f s", point, self.hold)
        if stop is not None:
            stop.wait(self.hold)
        else:
            threading.Event().wait(self.hold)
        log.warning("resuming after the pause at %s", point)


__all__ = ["PAUSE_HOLD", "POINTS", "Pause", "parse_pause"]
