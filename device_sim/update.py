"""What a simulated device sends once it trained on a task: the int8 ``up`` of its delta, with its ``meta``."""

from __future__ import annotations

import numpy as np

from flcore.messages import Task, Up
from flcore.quantize import quantize


def make_up(
    dev: str,
    task: Task,
    n: int,
    loss: float,
    seq: int,
    delta: np.ndarray,
    *,
    level: float,
    train_ms: int,
    ram: str,
    fw: str,
) -> Up:
    """The update of ``dev`` for ``task``: ``delta`` quantized in the task's chunks; ``level`` is the battery after
    the training and the send."""
    scales, q = quantize(delta, task.chunk)
    meta = {"battery": round(level, 4), "train_ms": train_ms, "ram_class": ram, "fw": fw}
    return Up(dev, task.round, task.base, n, loss, seq, task.chunk, scales, q, task.sub, meta)


__all__ = ["make_up"]
