"""The robust-rule settings the gateway and the cloud share, as a pydantic mixin (pydantic is in the base install;
the values are validated by ``check_rule`` and ``RuleParams``, the rules' own checks)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator

from flcore.robust import check_rule
from flcore.robust.params import FEDAVG, RuleParams


class RobustSettings(BaseModel):
    """``aggregation`` and the rule parameters (``IOTFL_AGGREGATION``, ``IOTFL_CLIP_NORM``, ``IOTFL_TRIM``,
    ``IOTFL_KRUM_F`` through the settings class that mixes this in)."""

    aggregation: str = Field(FEDAVG, description="fedavg | clip | trimmed-mean | median | krum")
    clip_norm: float = Field(0.0, description="clip: bound on each update's norm (0 = the round's median norm)")
    trim: float = Field(0.2, description="trimmed-mean: fraction trimmed at each end")
    krum_f: float = Field(0.2, description="krum: fraction of the updates assumed hostile")

    @field_validator("aggregation")
    @classmethod
    def _rule(cls, value: str) -> str:
        return check_rule(value.strip())

    @model_validator(mode="after")
    def _rule_params(self) -> RobustSettings:
        self.rule_params  # noqa: B018 -- builds RuleParams, which validates the parameters together
        return self

    @property
    def rule_params(self) -> RuleParams:
        return RuleParams(clip_norm=self.clip_norm, trim=self.trim, krum_f=self.krum_f)


__all__ = ["RobustSettings"]
