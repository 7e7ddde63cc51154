"""Dependencies of the routes: the app's services and the gateway behind a bearer token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud.auth import Tokens
from cloud.fleet import Fleet
from cloud.metrics import Metrics
from cloud.rounds import Rounds
from cloud.settings import CloudSettings

bearer = HTTPBearer(auto_error=False, description="the gateway's token")


async def get_rounds(request: Request) -> Rounds:
    return request.app.state.rounds


async def get_tokens(request: Request) -> Tokens:
    return request.app.state.tokens


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_settings(request: Request) -> CloudSettings:
    return request.app.state.settings


def get_fleet(request: Request) -> Fleet:
    return request.app.state.fleet


RoundsDep = Annotated[Rounds, Depends(get_rounds)]
TokensDep = Annotated[Tokens, Depends(get_tokens)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SettingsDep = Annotated[CloudSettings, Depends(get_settings)]
FleetDep = Annotated[Fleet, Depends(get_fleet)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def problem(code: int, reason: str, message: str = "", headers: dict[str, str] | None = None) -> HTTPException:
    """An HTTP error with the protocol's ``{"detail": {"reason": ...}}`` body."""
    detail = {"reason": reason, "message": message} if message else {"reason": reason}
    return HTTPException(status_code=code, detail=detail, headers=headers)


# The dependencies are coroutines: FastAPI would run a plain function in its thread pool, a thread hop per request
# for what takes microseconds; only a check-in that writes goes to a thread.


async def require_gateway(
    credentials: CredentialsDep, tokens: TokensDep, rounds: RoundsDep, metrics: MetricsDep
) -> str:
    """The gateway whose token the request carries (it checks in), else 401."""
    gw = tokens.identify(credentials.credentials) if credentials is not None else None
    if gw is None:
        metrics.aggregate("unauthorized")
        message = "missing bearer token" if credentials is None else "unknown gateway token"
        raise problem(status.HTTP_401_UNAUTHORIZED, "unauthorized", message, {"WWW-Authenticate": "Bearer"})
    await _checkin(rounds, gw)
    return gw


async def optional_gateway(credentials: CredentialsDep, tokens: TokensDep, rounds: RoundsDep) -> str | None:
    """GETs need no token; a valid one still counts as its gateway checking in."""
    gw = tokens.identify(credentials.credentials) if credentials is not None else None
    if gw is not None:
        await _checkin(rounds, gw)
    return gw


async def timed_post(metrics: MetricsDep) -> AsyncIterator[None]:
    """Time the request in the aggregate POST latency histogram; a route's first dependency, so it covers the
    token check and the body read as well."""
    with metrics.timed_post():
        yield


async def _checkin(rounds: Rounds, gw: str) -> None:
    if rounds.checkin_due(gw):
        await run_in_threadpool(rounds.checkin, gw)


GatewayDep = Annotated[str, Depends(require_gateway)]
PostTimerDep = Annotated[None, Depends(timed_post)]
CheckinDep = Annotated[str | None, Depends(optional_gateway)]
