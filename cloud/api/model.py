"""``GET /api/v1/model/latest``: the newest global model, msgpack by default or JSON with ``?format=json``."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from cloud.api.deps import CheckinDep, RoundsDep
from flcore.schema import WIRE_VERSION, pack

router = APIRouter()

MSGPACK = "application/msgpack"


@router.get(
    "/model/latest",
    response_class=Response,
    responses={200: {"content": {MSGPACK: {}, "application/json": {}}}},
    summary="The latest global model: version, layers and float32 weights",
)
def latest_model(rounds: RoundsDep, _gw: CheckinDep, format: Literal["msgpack", "json"] = "msgpack") -> Response:
    model = rounds.latest_model()
    body = {"v": WIRE_VERSION, "t": "model", "version": model.version, "layers": list(model.layers)}
    headers = {"X-Model-Version": str(model.version)}
    if format == "json":
        return JSONResponse({**body, "w": model.weights.tolist()}, headers=headers)
    return Response(pack({**body, "w": model.weights.astype("<f4").tobytes()}), media_type=MSGPACK, headers=headers)
