"""Whether a device trains on a task, and if not, why: the skip reasons of the ``status`` extension.

Pure functions of the device's state and the task. Random choices (a ``select`` fraction, duty cycling) are
stable hashes of (seed, device, round, sub), so a fleet run is reproducible whatever the thread timing.

With energy accounting (``BatteryModel.energy``) the battery check is one of two selection policies:
``naive`` (the published reference: train whenever the charge is at least the floor, 10 %) and ``aware`` (train only
when the charge left after the round still covers the floor plus the sleep until the next recharge, and, below a
nearly full store, at the rate the recharge can sustain — or more, the more charge there is to spare).
"""

from __future__ import annotations

import hashlib

from device_sim.battery import Battery
from flcore.energy import RoundEnergy, sleeping_round, training_round, up_bytes
from flcore.hetero import sub_spec, width_for
from flcore.messages import Task
from flcore.model import ModelSpec
from flcore.resources import can_train

SKIP_REASONS = ("dead", "ram", "select", "duty", "battery")
# aware: at or above this charge after the round a device trains whenever it can (a fuller store would only waste
# what the panel brings); below it, it throttles.
AWARE_FULL = 0.9


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


def aware_trains(*, level: float, cost: float, idle: float, recharge: float, dark: int, floor: float, u: float) -> bool:
    """The ``aware`` policy, all in fractions of a full store: ``cost`` of training this round, ``idle`` of a round
    asleep, ``recharge`` gained per round on average, ``dark`` rounds without any until the next, ``u`` a uniform
    draw. The charge after the round must cover ``floor`` and the sleep through the dark rounds; then the device
    trains with probability max(sustainable rate, share of the headroom up to ``AWARE_FULL``)."""
    after = level - cost
    reserve = floor + idle * (dark + 1)
    if after < reserve:
        return False
    if after >= AWARE_FULL or cost <= 0:
        return True
    sustainable = (recharge - idle) / cost  # trainings per round that the recharge pays for
    headroom = (after - reserve) / (AWARE_FULL - reserve) if AWARE_FULL > reserve else 1.0
    return u < max(sustainable, headroom)


def battery_allows(
    battery: Battery, min_battery: float, cost: RoundEnergy | None, *, dev: str, round: int, sub: int, seed: int
) -> bool:
    """The battery check: the *charge to spare* rule without an energy model, else the model's policy for a round
    whose training is estimated at ``cost``."""
    model, energy = battery.model, battery.energy
    if energy is None or cost is None:
        return battery.can_spare(min_battery)
    floor = max(min_battery, model.floor)
    if model.policy == "naive":
        return battery.level >= floor
    return aware_trains(
        level=battery.level,
        cost=model.fraction(cost),
        idle=model.fraction(sleeping_round(energy)),
        recharge=model.mean_recharge,
        dark=model.rounds_to_recharge(round),
        floor=floor,
        u=draw(seed, dev, round, sub, "energy"),
    )


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
    cost: RoundEnergy | None = None,
) -> str | None:
    """None to train, else the skip reason; checked from the fixed (RAM) to the momentary (battery). ``cost``: the
    estimated joules of training this round (energy accounting)."""
    if battery.dead:
        return "dead"
    if not can_train(spec, ram_class, batch):
        return "ram"
    if not selected(select, dev, round, sub, seed):
        return "select"
    if not awake(duty, dev, round, sub, seed):
        return "duty"
    if not battery_allows(battery, min_battery, cost, dev=dev, round=round, sub=sub, seed=seed):
        return "battery"
    return None


def decide_task(
    task: Task,
    *,
    ram_class: str,
    battery: Battery,
    duty: float,
    dev: str,
    seed: int,
    samples: int = 0,
    rx_bytes: int = 0,
) -> str | None:
    """``decide`` for a received task (``rx_bytes`` long) by a device holding ``samples``: None to train, else the
    skip reason."""
    energy = battery.energy
    cost = None
    spec = sub_spec(task.spec, width_for(task.widths, ram_class))  # what this device's class is told to train
    if energy is not None:
        tx = up_bytes(spec, task.chunk)
        cost = training_round(energy, spec, samples, task.epochs, rx_bytes, tx)
    return decide(
        spec=spec,
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
        cost=cost,
    )


def skip_state(reason: str) -> str:
    """The state a skipping device reports: ``offline`` when its battery is dead, ``sleeping`` when it skips for
    battery or duty, else ``online``."""
    if reason == "dead":
        return "offline"
    return "sleeping" if reason in ("duty", "battery") else "online"


__all__ = [
    "AWARE_FULL",
    "SKIP_REASONS",
    "aware_trains",
    "awake",
    "battery_allows",
    "decide",
    "decide_task",
    "draw",
    "selected",
    "shuffle_seed",
    "skip_state",
]
