"""The server-optimizer settings of the cloud and the demo, as a pydantic mixin (validated by ``OptParams``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator

from flcore.server_opt.params import FEDAVG, OptParams, check_name


class ServerOptSettings(BaseModel):
    """``server_opt`` and its hyper-parameters (``IOTFL_SERVER_OPT``, ``IOTFL_SERVER_LR``, … through the settings
    class that mixes this in)."""

    server_opt: str = Field(FEDAVG, description="server optimizer: fedavg | fedavgm | fedadam | fedyogi")
    server_lr: float | None = Field(
        None, description="server learning rate η (default per optimizer: fedavg 1, fedavgm 0.5, fedadam/yogi 0.05)"
    )
    server_momentum: float = Field(0.9, description="fedavgm: momentum β; fedadam/fedyogi: β1")
    server_beta2: float = Field(0.99, description="fedadam/fedyogi: β2 of the second moment")
    server_eps: float = Field(1e-3, description="fedadam/fedyogi: τ, the adaptivity floor")

    @field_validator("server_opt")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value.strip().lower())

    @model_validator(mode="after")
    def _params(self) -> ServerOptSettings:
        self.opt_params  # noqa: B018 -- builds OptParams, which validates the hyper-parameters together
        return self

    @property
    def opt_params(self) -> OptParams:
        return OptParams(
            name=self.server_opt,
            lr=self.server_lr,
            momentum=self.server_momentum,
            beta2=self.server_beta2,
            eps=self.server_eps,
        )

    def server_opt_flags(self) -> list[str]:
        """The same settings as ``iotfl cloud`` flags (what the demo passes to the cloud it starts)."""
        p = self.opt_params
        return [
            *("--server-opt", p.name, "--server-lr", str(p.eta), "--server-momentum", str(p.momentum)),
            *("--server-beta2", str(p.beta2), "--server-eps", str(p.eps)),
        ]


__all__ = ["ServerOptSettings"]
