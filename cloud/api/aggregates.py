"""``POST /api/v1/rounds/{round}/aggregates``: a gateway's msgpack aggregate, checked in the protocol's order."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, status
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import GatewayDep, MetricsDep, PostTimerDep, RoundsDep, SettingsDep, problem
from cloud.policy import Verdict
from cloud.views import AggregateResult, Problem, ValidationProblem
from flcore.errors import WireError
from flcore.messages import MAX_INT32, MAX_LOSS, MAX_SEQ, Agg

router = APIRouter()

BODY_OVERHEAD = 4 << 20  # room beyond the float32 sum for keys and a long `devs` list

_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
# The msgpack map described as the object it decodes to, so API fuzzers can build bodies that reach the checks.
_AGG_SCHEMA = {
    "type": "object",
    "required": ["v", "t", "gw", "round", "base", "n", "k", "sum", "loss"],
    "properties": {
        "v": {"type": "integer", "enum": [1]},
        "t": {"type": "string", "enum": ["agg"]},
        "gw": {**_ID, "description": "must be the token's gateway"},
        "round": {"type": "integer", "minimum": 1, "maximum": MAX_INT32, "description": "must equal the path's"},
        "base": {"type": "integer", "minimum": 0, "maximum": MAX_INT32},
        "n": {"type": "integer", "minimum": 1, "description": "samples; at most k × the cloud's max_samples"},
        "k": {"type": "integer", "minimum": 1, "maximum": MAX_INT32, "description": "device updates"},
        "sum": {"type": "string", "format": "binary", "description": "Σ nᵢ·deltaᵢ, little-endian float32 × P"},
        "loss": {"type": "number", "minimum": -MAX_LOSS, "maximum": MAX_LOSS},
        "bytes": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
        "devs": {"type": "array", "items": _ID},
    },
}
_MSGPACK_BODY = {
    "requestBody": {
        "required": True,
        "description": f"msgpack map with t='agg' (wire v1), at most 4·P + {BODY_OVERHEAD} bytes",
        "content": {"application/msgpack": {"schema": _AGG_SCHEMA}},
    }
}


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it grows past ``limit`` (read no further)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            return None
        parts.append(part)
    return b"".join(parts)


@router.post(
    "/rounds/{round}/aggregates",
    response_model=AggregateResult,
    response_model_exclude_defaults=True,  # `round` and `staleness` only for a late aggregate carried forward
    openapi_extra=_MSGPACK_BODY,
    responses={
        400: {"model": Problem, "description": "undecodable or invalid aggregate (a wire reason), round_mismatch"},
        401: {"model": Problem, "description": "missing or unknown bearer token"},
        403: {"model": Problem, "description": "the body's gw is not the token's gateway"},
        409: {"model": Problem, "description": "the round refuses it: late, future_round, base_mismatch"},
        413: {"model": Problem, "description": "body over 4·P bytes plus room for keys (checked before reading it)"},
        422: {"model": Problem | ValidationProblem, "description": "sum of the wrong length, or a bad path round"},
    },
    summary="Post a gateway's aggregate for a round",
)
async def post_aggregate(
    _timer: PostTimerDep,
    round: Annotated[int, Path(ge=1, le=MAX_INT32)],
    request: Request,
    gw: GatewayDep,
    rounds: RoundsDep,
    metrics: MetricsDep,
    settings: SettingsDep,
) -> AggregateResult:
    def refuse(code: int, reason: str, message: str = "") -> HTTPException:
        metrics.aggregate(reason)
        return problem(code, reason, message)

    limit = 4 * rounds.params + BODY_OVERHEAD
    body = await _read_body(request, limit)
    if body is None:
        raise refuse(status.HTTP_413_CONTENT_TOO_LARGE, "too_large", f"the body is over {limit} bytes")
    metrics.bytes_in(len(body))
    try:
        agg = Agg.decode(body, params=rounds.params, max_bytes=limit, max_samples=settings.max_samples)
    except WireError as exc:
        code = {"length": status.HTTP_422_UNPROCESSABLE_CONTENT, "too_large": status.HTTP_413_CONTENT_TOO_LARGE}
        raise refuse(code.get(exc.reason, status.HTTP_400_BAD_REQUEST), exc.reason, str(exc)) from None
    if agg.gw != gw:
        raise refuse(status.HTTP_403_FORBIDDEN, "forbidden", f"this token belongs to {gw!r}, not {agg.gw!r}")
    if agg.round != round:
        raise refuse(status.HTTP_400_BAD_REQUEST, "round_mismatch", f"path round {round} != body round {agg.round}")
    result = await run_in_threadpool(rounds.submit, agg)
    if result.verdict is Verdict.CARRIED:
        return AggregateResult(accepted=True, duplicate=False, round=result.counted_in, staleness=result.staleness)
    if result.verdict is Verdict.ACCEPTED:
        return AggregateResult(accepted=True, duplicate=False)
    if result.verdict is Verdict.DUPLICATE:
        return AggregateResult(accepted=False, duplicate=True)
    raise problem(status.HTTP_409_CONFLICT, result.verdict.value)
