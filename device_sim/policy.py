"""Whether a device trains on a task, and if not, why: the skip reasons of the ``status`` extension.

Pure functions of the device's state and the task. Random choices (a ``select`` fraction, duty cycling) are
stable hashes of (seed, device, round, sub), so a fleet run is reproducible whatever the thread timing.
"""

from __future__ import annotations

import hashlib

from device_sim.battery import Battery
from flcore.messages import Task
from flcore.model import ModelSpec
from flcore.resources import can_train

SKIP_REASONS = ("ram", "select", "duty", "battery")


def draw(seed: int, dev: str, round: int, sub: int, salt: str) -> float:
    """A uniform number in [0, 1) fixed by its arguments."""
    digest = hashlib.blake2b(f"{salt}:{seed}:{dev}:{round}:{sub}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def shuffle_seed(seed: int, dev: str, round: int, sub: int) -> int:
    """The seed of a device's mini-batch shuffles for one task."""
    return int(draw(seed, dev, round, sub, "shuffle") * 2**31)


def selected(select: list[str] | float | None, dev: str, round: int, sub: int, seed: int) -> bool:
    """``select`` admits the device: no ``select``, a list naming it, or a fraction its draw falls under."""
    if select is None:
        return True
    if isinstance(select, list):
        return dev in select
    return draw(seed, dev, round, sub, "select") < float(select)


def awake(duty: float, dev: str, round: int, sub: int, seed: int) -> bool:
    """Duty cycling: the device wakes for about a ``duty`` fraction of the tasks."""
    return duty >= 1.0 or draw(seed, dev, round, sub, "duty") < duty


def decide(
    *,
    spec: ModelSpec,
    batch: int,
    ram_class: str,
    battery: Battery,
    min_battery: float,
    select: list[str] | float | None,
    duty: float,
    dev: str,
    round: int,
    sub: int,
    seed: int,
) -> str | None:
    """None to train, else the skip reason; checked from the fixed (RAM) to the momentary (battery)."""
    if not can_train(spec, ram_class, batch):
        return "ram"
    if not selected(select, dev, round, sub, seed):
        return "select"
    if not awake(duty, dev, round, sub, seed):
        return "duty"
    if not battery.can_spare(min_battery):
        return "battery"
    return None


def decide_task(task: Task, *, ram_class: str, battery: Battery, duty: float, dev: str, seed: int) -> str | None:
    """``decide`` for a received task: None to train, else the skip reason."""
    return decide(
        spec=task.spec,
        batch=task.batch,
        ram_class=ram_class,
        battery=battery,
        min_battery=task.min_battery,
        select=task.select,
        duty=duty,
        dev=dev,
        round=task.round,
        sub=task.sub,
        seed=seed,
    )


def skip_state(reason: str) -> str:
    """The state a skipping device reports: ``sleeping`` when it skips for battery or duty, else ``online``."""
    return "sleeping" if reason in ("duty", "battery") else "online"


__all__ = ["SKIP_REASONS", "awake", "decide", "decide_task", "draw", "selected", "shuffle_seed", "skip_state"]
