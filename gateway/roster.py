"""Which devices a gateway waits for, and the rule that closes a sub-round (docs/protocol.md "Gateway")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from flcore.messages import Status


@dataclass
class Roster:
    """Live devices of one gateway, from retained ``status`` messages and from the updates they send.

    A device is live while its latest status names this gateway and is not ``offline``, or when it sent an update
    and no later status said otherwise. ``skips`` remembers the last (round, sub) each device declined.
    """

    gw: str
    by_status: set[str] = field(default_factory=set)
    by_update: set[str] = field(default_factory=set)
    skips: dict[str, tuple[int, int]] = field(default_factory=dict)

    def on_status(self, dev: str, status: Status | None) -> None:
        """Apply a device's latest retained status (None: the retained message was cleared)."""
        self.by_status.discard(dev)
        if status is None or status.state == "offline" or status.gw != self.gw:
            self.by_update.discard(dev)
            self.skips.pop(dev, None)
            return
        self.by_status.add(dev)
        if status.skip is not None and status.round is not None:
            self.skips[dev] = (status.round, status.sub or 0)

    def on_update(self, dev: str) -> None:
        self.by_update.add(dev)

    @property
    def live(self) -> set[str]:
        return self.by_status | self.by_update

    def skipped(self, round: int, sub: int) -> set[str]:
        return {dev for dev, at in self.skips.items() if at == (round, sub)}

    def close_reason(
        self, round: int, sub: int, accepted: set[str], k: int, quorum: int, fraction: float = 0.0
    ) -> str | None:
        """Why the open (round, sub) may close now — ``quorum``, ``quorum_fraction`` or ``all_answered`` — or None.

        ``quorum`` > 0 closes at that many accepted updates; ``fraction`` > 0 at ``ceil(fraction × live devices)``
        (at least one).
        """
        if quorum > 0 and k >= quorum:
            return "quorum"
        if fraction > 0 and k >= max(1, math.ceil(fraction * len(self.live) - 1e-9)):
            return "quorum_fraction"
        # Every live device answered, if only with a skip: waiting for the deadline would stall the round.
        if (k >= 1 or self.live) and self.live <= accepted | self.skipped(round, sub):
            return "all_answered"
        return None


__all__ = ["Roster"]
