"""``GET /api/v1/status``, ``GET /healthz`` and ``GET /metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from cloud.api.deps import CheckinDep, MetricsDep, RoundsDep
from cloud.views import Health, Status

api = APIRouter()
root = APIRouter()


@api.get("/status", summary="Fleet status: round, model version, gateways, history")
def fleet_status(rounds: RoundsDep, _gw: CheckinDep) -> Status:
    return rounds.status()


@root.get("/healthz", summary="Liveness probe")
def healthz() -> Health:
    return Health()


@root.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def metrics(request: Request, counters: MetricsDep) -> PlainTextResponse:
    """The Prometheus text format, or OpenMetrics when the scraper's ``Accept`` asks for it."""
    body, content_type = counters.render(request.headers.get("accept"))
    return PlainTextResponse(body, media_type=content_type)
