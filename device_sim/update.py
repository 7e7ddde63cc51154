"""What a simulated device sends once it trained on a task: the ``up`` of its encoded delta, with its ``meta``."""

from __future__ import annotations

from flcore.encodings import Encoded
from flcore.messages import Task, Up


def make_up(
    dev: str,
    task: Task,
    n: int,
    loss: float,
    seq: int,
    body: Encoded,
    *,
    level: float,
    train_ms: int,
    ram: str,
    fw: str,
) -> Up:
    """The update of ``dev`` for ``task`` carrying ``body`` (``flcore.encodings.encode`` of its delta); ``level`` is
    the battery after the training and the send."""
    meta = {"battery": round(level, 4), "train_ms": train_ms, "ram_class": ram, "fw": fw}
    return Up.of(body, dev, task.round, task.base, n, loss, seq, task.sub, meta)


__all__ = ["make_up"]
