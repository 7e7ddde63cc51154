"""Settings of a simulated fleet (``iotfl fleet``, and the fleet part of ``iotfl demo``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from device_sim.attack import parse_attack
from device_sim.battery import BatteryModel, Profile
from flcore.chaos import ChaosPlan, parse_chaos
from flcore.encodings import DEFAULT_TOPK, INT8, check_encoding
from flcore.energy import EnergyModel
from flcore.resources import RAM_CLASSES
from flcore.signing import KeyFileError, parse_key_file
from flcore.topics import check_id

# Mostly devices that can train the digits MLP (class2: 50 KB, constrained: 256 KB), plus a few sensors that
# cannot train it (class0 never trains; class1's 10 KB fits the sensors MLP but not the digits one).
DEFAULT_RAM_MIX = {"class0": 0.04, "class1": 0.06, "class2": 0.60, "constrained": 0.30}


class FleetSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IOTFL_", extra="ignore")

    devices: int = Field(50, ge=1, le=10_000, description="Simulated devices d0000…, each its own MQTT connection.")
    sim: Literal["device", "batched"] = Field(
        "device",
        description="device: a connection and a training per device; batched: every device of a round trains in one "
        "batched step and a shared connection per gateway carries their updates (device_sim.batch_fleet).",
    )
    gateways: int = Field(5, ge=1, le=1000, description="Gateways gw0…gw{G-1}; device i belongs to gateway i mod G.")
    broker: str = Field("mqtt://127.0.0.1:1883", description="mqtt://[user:pass@]host:port or mqtts://… (TLS).")
    fleet: str = Field("default", description="Fleet name, the second level of every topic.")
    dataset: str = Field("digits", description="digits | sensors | har | csv:PATH (its training split is shared out).")
    alpha: float = Field(0.5, gt=0, description="Dirichlet α of the non-IID label split (small = skewed).")
    seed: int = Field(0, description="Seed of the split, RAM classes, initial charges, RSSI and local shuffles.")

    battery: bool = Field(True, description="Battery model on; off means mains power (always full, never skips).")
    battery_start: tuple[float, float] = Field(
        (0.3, 1.0), description="Initial charge of each device, uniform in this range (fractions of full)."
    )
    train_cost: float = Field(0.05, ge=0, le=1, description="Charge one local training takes (the reference's 5 %).")
    message_cost: float = Field(0.002, ge=0, le=1, description="Charge one published message takes (up or status).")
    floor: float = Field(
        0.10, ge=0, le=1, description="Reserve no training may dip into, even when a task's min_battery is lower."
    )
    recharge: float = Field(
        0.025,
        ge=0,
        le=1,
        description="Mean charge gained per task (round or sub-round): ~half the round cost, so about half of a "
        "battery-powered fleet trains each round in steady state.",
    )
    recharge_profile: Profile = Field(
        "trickle", description="none | trickle (constant) | solar (day/night over solar_period rounds, same mean)."
    )
    solar_period: int = Field(12, ge=1, description="Rounds per simulated day of the solar profile.")
    energy_policy: Literal["off", "naive", "aware"] = Field(
        "off",
        description="off: the fraction costs above; naive | aware: the battery drains by joules (flcore.energy: "
        "bytes, multiply-accumulates, sleep) and a device trains by that policy (naive: charge >= floor; aware: "
        "keeps a reserve and throttles to the recharge); recharge is then a fraction of battery_j per round.",
    )
    battery_j: float = Field(
        EnergyModel().capacity_j,
        gt=0,
        allow_inf_nan=False,
        description="Energy store in joules with energy accounting (default: a 1,000 mAh 3.7 V LiPo).",
    )
    round_s: float = Field(
        EnergyModel().round_s,
        ge=0,
        allow_inf_nan=False,
        description="Simulated seconds per round with energy accounting: the deep sleep a round costs.",
    )
    duty: float = Field(
        1.0, ge=0, le=1, description="Duty cycle: fraction of tasks a device wakes for (sleeping ones skip 'duty')."
    )
    ram_mix: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_RAM_MIX),
        description="Share of each RAM class (class0, class1, class2, constrained) in the fleet; normalized.",
    )
    ram_follows_data: bool = Field(
        False,
        description="Give RAM classes in the order of the devices' most common label, smallest class first (one kind "
        "of hardware deployed where one kind of activity happens), instead of independently of the data.",
    )

    ack_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the gateway's ack before a re-send.")
    max_resends: int = Field(3, ge=0, le=100, description="Re-sends (same seq) of an unacked update before giving up.")
    workers: int = Field(2, ge=1, le=64, description="Training threads shared by all devices of the fleet.")
    keepalive: int = Field(30, ge=5, le=3600, description="MQTT keepalive in seconds (the broker's LWT delay).")
    connect_stagger: float = Field(0.005, ge=0, le=5, description="Seconds between two device connections.")
    connect_retries: int = Field(5, ge=0, le=100, description="Connection attempts per device beyond the first.")
    reconnect_min: float = Field(
        0.5, gt=0, le=60, description="First reconnect window (s): a lost connection is retried after U(0, this)."
    )
    reconnect_max: float = Field(
        15.0, gt=0, le=600, description="Largest reconnect window (s); windows double from reconnect_min up to it."
    )
    connect_timeout: float = Field(20.0, gt=0, description="Seconds the fleet waits for every device's CONNACK.")
    run_timeout: float | None = Field(
        None, gt=0, description="Give up after this many seconds (None: run until done=true or a stop)."
    )
    fw: str = Field("sim-0.1.0", description="Firmware version the devices report.")
    tls_ca: str | None = Field(None, description="CA file for mqtts:// (default: the system's trust store).")
    chaos: str | None = Field(
        None, description="Device faults to inject, e.g. 'drop-devices:30%@round3,slow-devices:20%' (flcore.chaos)."
    )
    rounds: int = Field(20, ge=1, description="Rounds of the run (the cloud's --rounds): places @F chaos triggers.")
    device_keys: Path | None = Field(
        None, description='JSON {"<dev>": "<64 hex>"}: a device with a key signs its updates (docs/protocol.md).'
    )
    provisioned: Path | None = Field(
        None,
        description="Folder of `iotfl provision fleet`: each device logs in with its devices/<dev>/config.json "
        "credentials; its ca/ca.crt and device-keys.json are the defaults of tls_ca and device_keys.",
    )
    dp_clip: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="DP: clip each update's delta to this L2 norm (0 = DP off)."
    )
    dp_noise: float = Field(
        1.0, gt=0, allow_inf_nan=False, description="DP noise multiplier z: Gaussian noise std z × dp_clip."
    )
    dp_delta: float = Field(1e-5, gt=0, lt=1, description="DP: the δ at which the run's ε is reported.")
    attack: str | None = Field(
        None, description="Poisoning attackers KIND:PCT, KIND sign-flip | scale10 | label-flip (device_sim.attack)."
    )

    enc: str = Field(
        INT8, description="Update encoding when a task names none: int8 | int4 | topk | f32 (flcore.encodings)."
    )
    topk: float = Field(
        DEFAULT_TOPK, gt=0, le=1, description="topk: fraction of the delta's values each update keeps (a task's wins)."
    )

    @field_validator("enc")
    @classmethod
    def _encoding(cls, value: str) -> str:
        return check_encoding(value.strip())

    @field_validator("fleet")
    @classmethod
    def _fleet_id(cls, value: str) -> str:
        return check_id(value, "fleet")

    @field_validator("attack")
    @classmethod
    def _attack(cls, value: str | None) -> str | None:
        return str(parse_attack(value)) if value and value.strip() else None

    @field_validator("device_keys")
    @classmethod
    def _key_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_keys(value)
        return value

    @field_validator("ram_mix")
    @classmethod
    def _mix(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(RAM_CLASSES)
        if unknown:
            raise ValueError(f"unknown RAM classes {sorted(unknown)}; known: {', '.join(RAM_CLASSES)}")
        if any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError("RAM class shares must be >= 0 with a positive sum")
        return value

    @field_validator("chaos")
    @classmethod
    def _chaos(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        plan = parse_chaos(value)
        foreign = plan.for_demo()
        if foreign:
            raise ValueError(
                f"{foreign} is a process fault: only `iotfl demo --chaos`, which owns the processes, injects it; "
                "the fleet injects drop-devices and slow-devices"
            )
        return str(plan)

    @model_validator(mode="after")
    def _start_range(self) -> FleetSettings:
        lo, hi = self.battery_start
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"battery_start must satisfy 0 <= low <= high <= 1, got {self.battery_start}")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must be >= reconnect_min")
        return self

    @model_validator(mode="after")
    def _batched_scope(self) -> FleetSettings:
        if self.sim == "batched":
            unsupported = [
                name
                for name, on in (
                    ("chaos", self.chaos),
                    ("attack", self.attack),
                    ("dp_clip", self.dp_clip > 0),
                    ("provisioned", self.provisioned),
                )
                if on
            ]
            if unsupported:
                raise ValueError(
                    f"sim=batched does not simulate {', '.join(unsupported)}: use sim=device for that "
                    "(batched shares one connection per gateway, see docs/protocol.md)"
                )
        return self

    @model_validator(mode="after")
    def _provisioned_defaults(self) -> FleetSettings:
        if self.provisioned is not None:
            ca, keys = self.provisioned / "ca" / "ca.crt", self.provisioned / "device-keys.json"
            if self.tls_ca is None and ca.is_file():
                self.tls_ca = str(ca)
            if self.device_keys is None and keys.is_file():
                read_keys(keys)
                self.device_keys = keys
        return self

    def keys(self) -> dict[str, bytes]:
        """The signing key of each device that has one."""
        return {} if self.device_keys is None else read_keys(self.device_keys)

    def chaos_plan(self) -> ChaosPlan:
        """The device faults with their triggers as absolute rounds of a ``rounds``-round run."""
        return parse_chaos(self.chaos or "").resolved(self.rounds)

    def battery_model(self) -> BatteryModel:
        return BatteryModel(
            enabled=self.battery,
            train_cost=self.train_cost,
            message_cost=self.message_cost,
            floor=self.floor,
            recharge=self.recharge,
            profile=self.recharge_profile,
            period=self.solar_period,
            energy=None
            if self.energy_policy == "off"
            else EnergyModel(capacity_j=self.battery_j, round_s=self.round_s),
            policy="naive" if self.energy_policy == "naive" else "aware",
        )


def read_keys(path: Path) -> dict[str, bytes]:
    """A device key file's keys; ValueError (one line) when it cannot be read or is bad."""
    try:
        return parse_key_file(path.read_text(), f"device key file {path}")
    except OSError as exc:
        raise KeyFileError(f"cannot read the device key file {path}: {exc.strerror or exc}") from None


__all__ = ["DEFAULT_RAM_MIX", "FleetSettings", "read_keys"]
