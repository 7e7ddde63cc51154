"""The fleet as gateways report it: ``POST /gateways/{gw}/report`` (a gateway), ``GET /gateways`` and
``GET /devices`` (the dashboard, tools)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, status
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import CheckinDep, FleetDep, GatewayDep, problem
from cloud.views import (
    ID_REGEX,
    DevicePage,
    FleetOverview,
    GatewayReport,
    ParseProblem,
    Problem,
    ReportResult,
    ValidationProblem,
)

router = APIRouter()

MAX_PAGE = 500


@router.post(
    "/gateways/{gw}/report",
    responses={
        400: {"model": ParseProblem, "description": "the body is not JSON"},
        401: {"model": Problem, "description": "missing or unknown bearer token"},
        403: {"model": Problem, "description": "the path's gateway is not the token's"},
        422: {"model": ValidationProblem, "description": "a malformed report or gateway id"},
    },
    summary="A gateway's report: its round progress, update counters and changed device statuses",
)
async def post_report(
    gw: Annotated[str, Path(pattern=ID_REGEX)], report: GatewayReport, caller: GatewayDep, fleet: FleetDep
) -> ReportResult:
    if gw != caller:
        raise problem(status.HTTP_403_FORBIDDEN, "forbidden", f"this token belongs to {caller!r}, not {gw!r}")
    stored = await run_in_threadpool(fleet.record, gw, report)
    return ReportResult(devices=stored)


@router.get("/gateways", summary="Every gateway: check-in, devices, bytes, current round progress, rejections")
def fleet_overview(fleet: FleetDep, _gw: CheckinDep) -> FleetOverview:
    return fleet.overview()


@router.get(
    "/devices",
    responses={422: {"model": ValidationProblem}},
    summary="One page of device statuses (battery, RSSI, RAM class, state), ordered by id",
)
def devices(
    fleet: FleetDep,
    _gw: CheckinDep,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    gw: Annotated[str | None, Query(pattern=ID_REGEX, description="only this gateway's devices")] = None,
    state: Annotated[Literal["online", "sleeping", "offline"] | None, Query()] = None,
) -> DevicePage:
    return fleet.devices(offset, limit, gw, state)
