"""The JSON bodies of the cloud's REST API (the contract's "Cloud REST" section), as pydantic models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class CurrentRound(BaseModel):
    """What gateways poll: the open round and its task hyper-parameters (``state`` is ``done`` at the end)."""

    round: int
    base: int
    state: Literal["open", "done"]
    deadline: float = Field(description="unix seconds")
    layers: list[int]
    lr: float
    epochs: int
    batch: int
    chunk: int
    min_battery: float
    gateway_rounds: int
    mode: Literal["sync", "async"] = Field(
        "sync", description="async: gateways accept updates of earlier rounds with a staleness weight (optional key)"
    )


class GatewayShare(BaseModel):
    k: int
    n: int
    loss: float


class CarriedShare(GatewayShare):
    """A late aggregate of an earlier round counted in this one, its ``sum`` scaled by ``weight`` = 1/√(1+staleness)."""

    gw: str
    round: int = Field(description="the round the aggregate was trained for")
    staleness: int
    weight: float


class RoundInfo(BaseModel):
    """One round; ``accuracy``/``loss`` are the held-out evaluation of the model the round produced."""

    round: int
    state: Literal["open", "closed"]
    base: int
    k: int
    n: int
    accuracy: float | None
    loss: float | None
    gateways: dict[str, GatewayShare] = Field(description="this round's own aggregates by gateway")
    carried: list[CarriedShare] = Field(
        default_factory=list, description="late aggregates of earlier rounds counted in this one (k and n include them)"
    )
    train_loss: float | None = Field(None, description="sample-weighted mean of the gateways' training loss")
    bytes_up: int = 0
    deadline: float | None = None
    closed_at: float | None = None


class GatewayInfo(BaseModel):
    id: str
    last_seen: float | None = Field(description="unix seconds of the last check-in")
    rounds_reported: int


class HistoryEntry(BaseModel):
    """One closed round of the history."""

    round: int
    accuracy: float | None
    loss: float | None
    k: int
    n: int
    bytes_up: int
    closed_at: float | None = Field(description="unix seconds")
    train_loss: float | None = None


class Status(BaseModel):
    fleet: str
    round: int
    model_version: int
    state: Literal["running", "done"]
    gateways: list[GatewayInfo]
    devices_seen: int
    history: list[HistoryEntry]
    total_rounds: int
    initial_accuracy: float = Field(description="held-out accuracy of model version 0")
    deadline: float | None = Field(None, description="the open round's deadline (unix seconds)")


class AggregateResult(BaseModel):
    accepted: bool
    duplicate: bool
    round: int | None = Field(default=None, description="the round a late aggregate counts in (the open round)")
    staleness: int = Field(default=0, description="rounds between the aggregate's round and the one it counts in")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class ProblemDetail(BaseModel):
    reason: str = Field(description="machine-readable code: a wire reason (decode, n_range, …) or the API's own")
    message: str = Field("", description="what was wrong, for a human (omitted when the reason says it all)")


class Problem(BaseModel):
    """The body of every error the API itself raises."""

    detail: ProblemDetail


class ValidationProblem(BaseModel):
    """FastAPI's answer to a path or query parameter it could not parse (a 422 without a ``reason``)."""

    detail: list[dict[str, Any]]
