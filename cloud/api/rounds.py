"""``GET /api/v1/rounds/current`` (what gateways poll) and ``GET /api/v1/rounds/{round}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from cloud.api.deps import CheckinDep, RoundsDep, problem
from cloud.views import CurrentRound, Problem, RoundInfo, ValidationProblem
from flcore.messages import MAX_INT32

router = APIRouter()


@router.get("/rounds/current", summary="The open round and its task parameters")
def current_round(rounds: RoundsDep, _gw: CheckinDep) -> CurrentRound:
    return rounds.current()


@router.get(
    "/rounds/{round}",
    responses={404: {"model": Problem, "description": "the round never opened"}, 422: {"model": ValidationProblem}},
    summary="One round's totals, evaluation and gateways",
)
def round_info(round: Annotated[int, Path(ge=1, le=MAX_INT32)], rounds: RoundsDep, _gw: CheckinDep) -> RoundInfo:
    info = rounds.round_info(round)
    if info is None:
        raise problem(status.HTTP_404_NOT_FOUND, "unknown_round", f"round {round} never opened")
    return info
