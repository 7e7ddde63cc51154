"""The gateway collector's value types: the sub-round it collects for, a round's totals, and its verdicts on updates."""

from __future__ import annotations

from dataclasses import dataclass, field

from flcore.messages import Ack, Up
from flcore.personal import Pers


@dataclass(frozen=True)
class SubRound:
    """The (round, sub) a gateway collects for, with the task's base version and the model's parameter count and
    layers (which width-sliced updates are checked and scattered against; () = none accepted)."""

    round: int
    sub: int
    base: int
    params: int
    layers: tuple[int, ...] = ()


@dataclass
class RoundTotals:
    """What one global round collected across its sub-rounds (the ``agg`` fields other than ``sum``)."""

    round: int
    base: int
    devices: dict[str, int] = field(default_factory=dict)
    k: int = 0
    loss_weighted: float = 0.0
    samples: int = 0
    bytes_up: int = 0
    stale: int = 0
    stale_weight: float = 0.0
    pers: Pers = Pers()  # sums of the local accuracies the accepted updates reported

    @property
    def n(self) -> int:
        """Samples of the distinct devices that contributed (a device counts once however many sub-rounds)."""
        return sum(self.devices.values())

    @property
    def loss(self) -> float:
        """Sample-weighted mean training loss over every accepted update of the round."""
        return self.loss_weighted / self.samples if self.samples else float("nan")


@dataclass(frozen=True)
class Accepted:
    """An update accepted in a batch, with the topic and raw payload it came with (what the journal keeps)."""

    update: Up
    topic: str
    payload: bytes


@dataclass(frozen=True)
class Judged:
    """What the rules decided for one message before it is applied: an ``ack`` (None: park the update) and, once
    decoded, the update (folded only when accepted)."""

    dev: str
    topic: str
    payload: bytes
    ack: Ack | None
    update: Up | None = None
    staleness: int = 0

    @property
    def accepted(self) -> bool:
        return self.ack is not None and self.ack.status == "accepted"


@dataclass(frozen=True)
class Verdict:
    """The collector's answer: the device to ack, the ack, and the decoded update when it was accepted."""

    dev: str
    ack: Ack
    update: Up | None = None
