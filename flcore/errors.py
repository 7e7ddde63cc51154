"""The one error a receiver raises for a bad wire message.

``WireError`` carries a reason code from the contract (``decode``, ``version``, ``schema``, ``dev_mismatch``,
``n_range``, ``length``, ``scale``, ``loss``, ``too_large``; ``signature`` for a signed update, ``enc`` for an
encoding the receiver does not know) and the message's ``round``/``seq`` when they could be read, so the receiver
can still ack the sender.
"""

from __future__ import annotations

REASONS = frozenset(
    {
        "decode",
        "version",
        "schema",
        "dev_mismatch",
        "n_range",
        "length",
        "scale",
        "loss",
        "too_large",
        "signature",
        "enc",
    }
)


class WireError(ValueError):
    def __init__(self, reason: str, detail: str = "", *, round: int | None = None, seq: int | None = None):
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.round = round
        self.seq = seq
