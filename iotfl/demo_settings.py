"""Settings of ``iotfl demo`` (``[demo]`` in the config file, ``IOTFL_*``): fleet, rounds, faults, privacy, rules."""

from __future__ import annotations

import json
import math
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from device_sim.attack import parse_attack
from flcore.chaos import ChaosPlan, parse_chaos
from flcore.encodings import DEFAULT_TOPK, check_encoding
from flcore.resources import class_map_text, parse_class_map
from flcore.robust import RuleParams, check_rule
from flcore.server_opt.settings import ServerOptSettings
from iotfl.chaos import check_plan

# Local-training hyper-parameters per dataset (lr, epochs, batch), tuned on this project's demo runs.
TRAINING_DEFAULTS: dict[str, tuple[float, int, int]] = {
    "digits": (0.1, 2, 8),
    "sensors": (0.05, 2, 8),
    "har": (0.1, 2, 8),
}
CSV_DEFAULTS = (0.05, 2, 8)


class DemoSettings(BaseSettings, ServerOptSettings):
    model_config = SettingsConfigDict(env_prefix="IOTFL_", extra="ignore")

    devices: int = Field(50, ge=1)
    sim: Literal["device", "batched"] = "device"
    gateways: int = Field(5, ge=1)
    rounds: int = Field(20, ge=1)
    dataset: str = "digits"
    alpha: float = Field(0.5, gt=0)
    seed: int = 0
    broker: str = "auto"
    battery: bool = True
    energy_policy: Literal["off", "naive", "aware"] = "off"
    gateway_rounds: int = Field(1, ge=1)
    lr: float | None = Field(None, gt=0)
    epochs: int | None = Field(None, ge=1)
    batch: int | None = Field(None, ge=1)
    round_timeout: float = Field(30.0, gt=0)
    chaos: str | None = None
    mode: Literal["sync", "async"] = "sync"
    quorum_fraction: float = Field(0.0, ge=0, le=1)
    dp_clip: float = Field(0.0, ge=0, allow_inf_nan=False)
    dp_noise: float = Field(1.0, gt=0, allow_inf_nan=False)
    dp_delta: float = Field(1e-5, gt=0, lt=1)
    aggregation: str = "fedavg"
    clip_norm: float = 0.0
    trim: float = 0.2
    krum_f: float = 0.2
    select: float | None = Field(None, gt=0, le=1)
    attack: str | None = None
    enc: str | None = None
    topk: float = Field(DEFAULT_TOPK, gt=0, le=1)
    signed: bool = False
    personal_epochs: int = Field(0, ge=0, le=1000)
    widths: str | None = None
    ram_mix: str | None = None
    ram_follows_data: bool = False

    @field_validator("enc")
    @classmethod
    def _encoding(cls, value: str | None) -> str | None:
        return check_encoding(value.strip()) if value and value.strip() else None

    @field_validator("chaos")
    @classmethod
    def _chaos(cls, value: str | None) -> str | None:
        return str(parse_chaos(value)) if value and value.strip() else None

    @field_validator("aggregation")
    @classmethod
    def _rule(cls, value: str) -> str:
        return check_rule(value.strip())

    @field_validator("attack")
    @classmethod
    def _attack(cls, value: str | None) -> str | None:
        return str(parse_attack(value)) if value and value.strip() else None

    @model_validator(mode="after")
    def _rule_params(self) -> DemoSettings:
        RuleParams(clip_norm=self.clip_norm, trim=self.trim, krum_f=self.krum_f)  # raises on a bad parameter
        return self

    @field_validator("widths", "ram_mix")
    @classmethod
    def _class_map(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            return None
        hi, lo_open = (1.0, True) if info.field_name == "widths" else (math.inf, False)
        if value.lstrip().startswith("{"):  # IOTFL_RAM_MIX as the fleet reads it: a JSON map
            value = class_map_text(json.loads(value))
        return class_map_text(parse_class_map(value, what=str(info.field_name), lo=0.0, hi=hi, lo_open=lo_open))

    def cloud_flags(self) -> list[str]:
        """The server-optimizer, selection and width flags of the cloud."""
        return [
            *self.server_opt_flags(),
            *(["--select", str(self.select)] if self.select is not None else []),
            *(["--widths", self.widths] if self.widths else []),
        ]

    def fleet_env(self) -> dict[str, str]:
        """Settings of the fleet process given by environment: the RAM class mix (a JSON map there) and whether it
        follows the data."""
        follows = {"IOTFL_RAM_FOLLOWS_DATA": "true"} if self.ram_follows_data else {}
        if not self.ram_mix:
            return follows
        return follows | {
            "IOTFL_RAM_MIX": json.dumps(
                parse_class_map(self.ram_mix, what="ram_mix", lo=0.0, hi=math.inf, lo_open=False)
            )
        }

    def rule_flags(self) -> list[str]:
        """The aggregation flags of the cloud and the gateways."""
        return [
            *("--aggregation", self.aggregation, "--clip-norm", str(self.clip_norm)),
            *("--trim", str(self.trim), "--krum-f", str(self.krum_f)),
        ]

    @model_validator(mode="after")
    def _batched_scope(self) -> DemoSettings:
        if self.sim == "batched":
            asked = (("device chaos", bool(self.chaos_plan().for_fleet())), ("attacks", bool(self.attack)))
            unsupported = [name for name, on in (*asked, ("DP", self.dp_clip > 0)) if on]
            if unsupported:
                raise ValueError(f"--sim batched does not simulate {', '.join(unsupported)}; use --sim device")
        return self

    @model_validator(mode="after")
    def _chaos_fits(self) -> DemoSettings:
        check_plan(self.chaos_plan(), self.rounds, self.gateways, self.owns_broker)
        return self

    @property
    def owns_broker(self) -> bool:
        return self.broker in ("auto", "embedded", "mosquitto")

    def chaos_plan(self) -> ChaosPlan:
        """The faults to inject, each at an absolute round of this run."""
        return parse_chaos(self.chaos or "").resolved(self.rounds)

    def training(self) -> tuple[float, int, int]:
        lr, epochs, batch = TRAINING_DEFAULTS.get(self.dataset, CSV_DEFAULTS)
        return self.lr or lr, self.epochs or epochs, self.batch or batch
