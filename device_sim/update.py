"""What a simulated device sends for a task: the delta its local training makes (clipped and noised under DP,
poisoned by an attacker), and the ``up`` of that delta encoded, with its ``meta``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from device_sim.attack import Attack
from device_sim.battery import Battery
from device_sim.policy import shuffle_seed
from device_sim.settings import FleetSettings
from device_sim.trainer import train_local
from flcore.encodings import Encoded
from flcore.hetero import slice_weights, sub_spec
from flcore.messages import Task, Up
from flcore.privacy import clip_and_noise

log = logging.getLogger(__name__)


def local_delta(
    dev: str,
    task: Task,
    x: np.ndarray,
    y: np.ndarray,
    settings: FleetSettings,
    dp_rng: np.random.Generator,
    attack: Attack | None,
    width: float = 1.0,
) -> tuple[np.ndarray, float, int]:
    """``dev`` trains on its shard ``(x, y)`` from the task's weights: the delta it sends, its training loss and the
    milliseconds the training took. With ``settings.dp_clip`` the delta is clipped and noised (from ``dp_rng``) and
    the loss reported as 0; an ``attack`` poisons the delta after that. With ``width`` < 1 the device trains that
    width-sliced sub-model (``flcore.hetero``) and the delta is the sub-model's."""
    s = settings
    started = time.perf_counter()
    seed = shuffle_seed(s.seed, dev, task.round, task.sub)
    spec, w = task.spec, task.w
    if width < 1.0:
        spec, w = sub_spec(task.spec, width), slice_weights(task.spec, task.w, width)
    new_w, loss = train_local(spec, w, x, y, task.lr, task.epochs, task.batch, seed)
    train_ms = int(round((time.perf_counter() - started) * 1000))
    delta = new_w - w
    if s.dp_clip > 0:
        delta, norm = clip_and_noise(delta, s.dp_clip, s.dp_noise, dp_rng)
        log.debug("%s: round %d delta norm %.4f, clip %.4f", dev, task.round, norm, s.dp_clip)
        loss = 0.0  # the training loss is a function of the data that the noise does not cover
    if attack is not None:
        delta = attack.poison(delta)  # after any DP clipping: an attacker does not bound itself
    return delta, loss, train_ms


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
    accuracy: tuple[float, float] | None = None,
    width: float = 1.0,
) -> Up:
    """The update of ``dev`` for ``task`` carrying ``body`` (``flcore.encodings.encode`` of its delta); ``level`` is
    the battery after the training and the send; ``accuracy`` its local held-out (personal, global) accuracies."""
    meta: dict[str, object] = {"battery": round(level, 4), "train_ms": train_ms, "ram_class": ram, "fw": fw}
    if accuracy is not None:
        meta["pacc"], meta["gacc"] = round(accuracy[0], 4), round(accuracy[1], 4)
    return Up.of(body, dev, task.round, task.base, n, loss, seq, task.sub, meta, width)


def spend_and_seal(
    battery: Battery, task: Task, samples: int, rx_bytes: int, make: Callable[..., Up], key: bytes | None
) -> tuple[Up, bytes] | None:
    """Charge ``battery`` for a round of training on ``task`` that received ``rx_bytes`` and sends the update
    ``make(level=…)``; returns the update with the level after the round and its payload (signed with ``key``), or
    None when the battery ran out first. The payload's size does not depend on the level (a msgpack float is
    always 9 bytes), so the charge is for the bytes actually sent."""
    size = len(make(level=battery.level).encode(key=key))
    if not battery.spend_round(task.spec, samples, task.epochs, rx_bytes, size):
        return None
    up = make(level=battery.level)
    return up, up.encode(key=key)


__all__ = ["local_delta", "make_up", "spend_and_seal"]
