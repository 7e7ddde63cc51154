"""``POST /api/v1/rounds/{round}/aggregates``: a gateway's msgpack aggregate, checked in the protocol's order."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, status
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import GatewayDep, MetricsDep, RoundsDep, problem
from cloud.policy import Verdict
from cloud.views import AggregateResult
from flcore.errors import WireError
from flcore.messages import Agg

router = APIRouter()

BODY_OVERHEAD = 4 << 20  # room beyond the float32 sum for keys and a long `devs` list

_MSGPACK_BODY = {
    "requestBody": {
        "required": True,
        "description": "msgpack map with t='agg' (wire v1): gw, round, base, n, k, sum (float32 bin), loss",
        "content": {"application/msgpack": {"schema": {"type": "string", "format": "binary"}}},
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
    responses={400: {}, 401: {}, 403: {}, 409: {}, 413: {}, 422: {}},
    summary="Post a gateway's aggregate for a round",
)
async def post_aggregate(
    round: Annotated[int, Path(ge=1)], request: Request, gw: GatewayDep, rounds: RoundsDep, metrics: MetricsDep
) -> AggregateResult:
    def refuse(code: int, reason: str, message: str = "") -> HTTPException:
        metrics.aggregate(reason)
        return problem(code, reason, message)

    limit = 4 * rounds.params + BODY_OVERHEAD
    body = await _read_body(request, limit)
    if body is None:
        raise refuse(status.HTTP_413_CONTENT_TOO_LARGE, "too_large", f"the body is over {limit} bytes")
    try:
        agg = Agg.decode(body, params=rounds.params, max_bytes=limit)
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
