"""Energy a device spends on one round, in joules, from bytes sent and received and multiply-accumulates.

The constants describe an ESP32-class board (docs/learning.md, section "Energy", cites the datasheet figures):
the radio's TX and RX current at 3.3 V over an effective application throughput, the time the radio stays on to
associate when the device wakes, the CPU's active current and its rate of multiply-accumulates, the deep-sleep
current between rounds, and the energy store (a 1,000 mAh 3.7 V LiPo by default).

Training an MLP costs, per sample and epoch, a forward pass plus a backward pass of about twice its
multiply-accumulates (gradients of the activations and of the weights): 3 × the forward MACs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from flcore.model import ModelSpec

# Bytes of an ``up`` message beyond its int8 values and float32 scales: msgpack keys, ids, counters, the MQTT header
# and topic. A policy only needs an estimate before it trains; the battery is charged with the real payload.
UP_OVERHEAD_BYTES = 160
JOULES_PER_MAH_AT_VOLT = 3.6  # 1 mAh = 3.6 coulombs: × volts gives joules


@dataclass(frozen=True)
class EnergyModel:
    """An ESP32-class device's power figures (amps at ``volts``) and its energy store."""

    volts: float = 3.3
    tx_amps: float = 0.190  # Wi-Fi TX, 802.11g 54 Mbit/s at 16 dBm (datasheet: 190 mA)
    rx_amps: float = 0.100  # Wi-Fi RX, 802.11b/g/n (datasheet: 95-100 mA)
    throughput_bps: float = 1_000_000.0  # effective MQTT-over-TCP throughput of MicroPython, far below the PHY rate
    wake_s: float = 1.5  # radio on to re-associate, get a lease and reconnect to the broker after deep sleep
    cpu_amps: float = 0.068  # CPU at 240 MHz, radio off (datasheet "modem-sleep": 30-68 mA)
    macs_per_s: float = 100_000.0  # float32 MACs/s of interpreted MicroPython loops using the FPU (firmware/mlp.py)
    sleep_amps: float = 10e-6  # deep sleep, RTC timer and RTC memory on (datasheet: 10 µA)
    round_s: float = 600.0  # wall time of one round: what the device sleeps through
    capacity_j: float = 1000 * 3.7 * JOULES_PER_MAH_AT_VOLT  # 1,000 mAh at 3.7 V: 13,320 J

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value}")
        for name in ("volts", "throughput_bps", "macs_per_s", "capacity_j"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")

    def tx_joules(self, nbytes: int) -> float:
        return self.tx_amps * self.volts * 8 * nbytes / self.throughput_bps

    def rx_joules(self, nbytes: int) -> float:
        return self.rx_amps * self.volts * 8 * nbytes / self.throughput_bps

    def wake_joules(self) -> float:
        """The radio listening while the device re-joins the network (counted as receiving)."""
        return self.rx_amps * self.volts * self.wake_s

    def compute_joules(self, macs: int) -> float:
        return self.cpu_amps * self.volts * macs / self.macs_per_s

    def idle_joules(self) -> float:
        """Deep sleep through one round."""
        return self.sleep_amps * self.volts * self.round_s


@dataclass(frozen=True)
class RoundEnergy:
    """Joules spent in one round by kind; adds up (``a + b``)."""

    tx: float = 0.0
    rx: float = 0.0
    compute: float = 0.0
    idle: float = 0.0

    @property
    def total(self) -> float:
        return self.tx + self.rx + self.compute + self.idle

    def __add__(self, other: RoundEnergy) -> RoundEnergy:
        return RoundEnergy(self.tx + other.tx, self.rx + other.rx, self.compute + other.compute, self.idle + other.idle)


def forward_macs(spec: ModelSpec) -> int:
    """Multiply-accumulates of one sample's forward pass."""
    return sum(i * o for i, o in zip(spec.layers, spec.layers[1:], strict=False))


def training_macs(spec: ModelSpec, samples: int, epochs: int) -> int:
    """Forward and backward (≈ 3 × forward) over ``samples`` for ``epochs``."""
    return 3 * forward_macs(spec) * samples * epochs


def up_bytes(spec: ModelSpec, chunk: int) -> int:
    """An int8 ``up`` message's size before it is made: int8 values, a float32 scale per chunk, the overhead."""
    p = spec.param_count
    return p + 4 * math.ceil(p / chunk) + UP_OVERHEAD_BYTES


def training_round(
    model: EnergyModel, spec: ModelSpec, samples: int, epochs: int, rx_bytes: int, tx_bytes: int
) -> RoundEnergy:
    """A round the device trains in: it wakes, reads the task (``rx_bytes``), trains, sends ``tx_bytes``, sleeps."""
    return RoundEnergy(
        tx=model.tx_joules(tx_bytes),
        rx=model.wake_joules() + model.rx_joules(rx_bytes),
        compute=model.compute_joules(training_macs(spec, samples, epochs)),
        idle=model.idle_joules(),
    )


def sleeping_round(model: EnergyModel) -> RoundEnergy:
    """A round the device sleeps through: it knows the round schedule and keeps its radio off."""
    return RoundEnergy(idle=model.idle_joules())


__all__ = [
    "UP_OVERHEAD_BYTES",
    "EnergyModel",
    "RoundEnergy",
    "forward_macs",
    "sleeping_round",
    "training_macs",
    "training_round",
    "up_bytes",
]
