"""The broker's count of silently dropped messages, read from mosquitto's ``$SYS`` tree.

mosquitto drops a QoS 1 message without telling anyone when a client's queue is past ``max_queued_messages`` (or
``max_queued_bytes``); ``$SYS/broker/publish/messages/dropped`` (published every ``sys_interval`` seconds, retained)
is the only trace. The counter restarts at 0 with the broker, so ``total`` adds up what each broker run reported.
A broker without the topic (amqtt) or an ACL that hides it leaves ``latest`` at None.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"


class BrokerStats:
    """The dropped-messages counter as this gateway saw it: the latest value, a running total, per-round deltas."""

    def __init__(self) -> None:
        self.latest: int | None = None
        self.total = 0  # drops seen since this gateway started (across broker restarts)
        self._at_take = 0
        self._lock = threading.Lock()

    def on_dropped(self, topic: str, payload: bytes) -> None:
        """Handler for ``DROPPED_TOPIC``."""
        try:
            value = int(payload.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            log.info("ignored a non-numeric %s: %r", topic, payload[:40])
            return
        with self._lock:
            if self.latest is not None:
                # A smaller value means the broker restarted and counts from 0 again.
                self.total += value - self.latest if value >= self.latest else value
            self.latest = value

    def take(self) -> int:
        """Drops seen since the previous ``take()`` (the gateway logs this once per round)."""
        with self._lock:
            delta, self._at_take = self.total - self._at_take, self.total
        return delta


__all__ = ["BrokerStats", "DROPPED_TOPIC"]
