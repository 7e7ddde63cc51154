"""The JSON bodies of the cloud's REST API (the contract's "Cloud REST" section), as pydantic models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from flcore.topics import ID_PATTERN


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
    select: float | None = Field(
        None, description="fraction of its devices a gateway asks to train (optional key; null/absent = every device)"
    )
    personal: int = Field(0, description="epochs of personal-head fine-tuning asked of devices, 0 = none")
    widths: dict[str, float] | None = Field(
        None, description="width-sliced sub-model per RAM class (HeteroFL; optional key, null = every class whole)"
    )


class LocalAccuracy(BaseModel):
    """Mean accuracies on the devices' own held-out samples, over the devices that reported them."""

    p_accuracy: float | None = Field(None, description="personal models (global body + personal head)")
    l_accuracy: float | None = Field(None, description="the global model the devices trained from")
    p_devices: int | None = Field(None, description="device updates that reported them")


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


class RoundInfo(LocalAccuracy):
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


class HistoryEntry(LocalAccuracy):
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
    server_opt: str = Field("fedavg", description="the server optimizer: fedavg | fedavgm | fedadam | fedyogi")
    server_lr: float = Field(1.0, description="its server learning rate η (the given one or its default)")


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


class ParseProblem(BaseModel):
    """FastAPI's answer to a JSON body it could not parse (a 400 without a ``reason``)."""

    detail: str


class ValidationProblem(BaseModel):
    """FastAPI's answer to a path or query parameter it could not parse (a 422 without a ``reason``)."""

    detail: list[dict[str, Any]]


# --- what gateways report about their fleet (cloud.fleet), and the dashboard's views of it -----------------------

ID_REGEX = f"^{ID_PATTERN.pattern}$"  # a device or gateway id, anchored (pydantic's pattern searches)


class DeviceStatus(BaseModel):
    """A device's latest retained ``status`` as its gateway received it (the wire message's fields)."""

    dev: str = Field(pattern=ID_REGEX)
    state: Literal["online", "sleeping", "offline"]
    battery: float | None = Field(None, ge=0, le=1, description="charge, 0..1")
    rssi: int | None = Field(None, ge=-200, le=50, description="dBm")
    ram_class: str | None = Field(None, max_length=32)
    fw: str | None = Field(None, max_length=64)
    updated_at: float = Field(ge=0, le=1e11, description="unix seconds the gateway received it")


class GatewayReport(BaseModel):
    """``POST /api/v1/gateways/{gw}/report``: the round the gateway collects and the statuses that changed."""

    round: int = Field(ge=0, le=2**31 - 1, description="the global round being collected (0: none yet)")
    accepted: int = Field(0, ge=0, le=2**31 - 1, description="updates accepted for it so far")
    devices_in_round: int = Field(0, ge=0, le=2**31 - 1, description="distinct devices among them")
    live: int = Field(0, ge=0, le=2**31 - 1, description="devices the gateway counts as live")
    bytes_up: int = Field(0, ge=0, le=2**53, description="update bytes received for the round")
    counters: dict[Annotated[str, Field(max_length=64)], Annotated[int, Field(ge=0, le=2**53)]] = Field(
        default_factory=dict, max_length=256, description="updates by ack status / reject reason since it started"
    )
    devices: list[DeviceStatus] = Field(
        default_factory=list, max_length=20_000, description="statuses that changed since its last accepted report"
    )


class ReportResult(BaseModel):
    devices: int = Field(description="device statuses stored")


class DeviceInfo(DeviceStatus):
    gw: str = Field(description="the gateway that reported it last")


class DevicePage(BaseModel):
    """One page of ``GET /api/v1/devices``, ordered by device id."""

    total: int = Field(description="devices matching the filters")
    offset: int
    limit: int
    items: list[DeviceInfo]


class GatewayProgress(BaseModel):
    """A gateway's last report on the round it collects."""

    round: int
    accepted: int
    devices: int
    live: int
    bytes_up: int
    reported_at: float = Field(description="unix seconds (the cloud's clock)")


class GatewayDetail(GatewayInfo):
    devices_online: int = Field(description="devices whose latest status is not offline")
    devices_known: int = Field(description="devices with a status from this gateway")
    bytes_up: int = Field(description="update bytes of all its aggregates")
    posted: bool = Field(description="it posted the current round's aggregate")
    progress: GatewayProgress | None = Field(description="null until it reports")
    rejected: dict[str, int] = Field(description="refused device updates by reason, since the gateway started")


class FleetOverview(BaseModel):
    """``GET /api/v1/gateways``: the dashboard's view of every gateway in the current round."""

    round: int = Field(description="the current round (0 before the first opens)")
    gateways: list[GatewayDetail]
    rejected: dict[str, int] = Field(description="refused device updates by reason, all gateways")
