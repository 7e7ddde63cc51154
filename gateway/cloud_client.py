"""HTTP to the cloud: poll ``rounds/current``, fetch ``model/latest``, post the round's ``agg`` with retries.

Errors are one small tree: ``CloudError`` (unreachable, bad answer) and its subclass ``CloudRefused`` (a 4xx that
retrying cannot fix, e.g. a wrong token).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack
import numpy as np

from flcore.messages import Agg
from flcore.model import ModelSpec

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0


class CloudError(RuntimeError):
    """The cloud could not be reached or answered something unusable."""


class CloudRefused(CloudError):
    """The cloud refused the request for a reason a retry will not change."""


@dataclass(frozen=True)
class RoundInfo:
    """``GET /api/v1/rounds/current``."""

    round: int
    base: int
    state: str
    deadline: float
    layers: tuple[int, ...]
    lr: float
    epochs: int
    batch: int
    chunk: int
    min_battery: float
    gateway_rounds: int = 1

    @classmethod
    def from_json(cls, data: Any) -> RoundInfo:
        if not isinstance(data, dict):
            raise CloudError(f"rounds/current is not a JSON object: {data!r:.80}")
        try:
            info = cls(
                round=_int(data["round"]),
                base=_int(data["base"]),
                state=str(data["state"]),
                deadline=float(data["deadline"]),
                layers=tuple(_int(x) for x in data["layers"]),
                lr=float(data["lr"]),
                epochs=_int(data["epochs"]),
                batch=_int(data["batch"]),
                chunk=_int(data["chunk"]),
                min_battery=float(data["min_battery"]),
                gateway_rounds=_int(data.get("gateway_rounds", 1)),
            )
            ModelSpec(info.layers)
        except (KeyError, TypeError, ValueError) as exc:
            raise CloudError(f"rounds/current answer is malformed: {exc}") from None
        if info.state not in ("open", "done") or info.gateway_rounds < 1:
            raise CloudError(f"rounds/current has state {info.state!r}, gateway_rounds {info.gateway_rounds}")
        return info


@dataclass(frozen=True)
class Model:
    version: int
    layers: tuple[int, ...]
    w: np.ndarray


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


class CloudClient:
    """A synchronous client for one gateway; every request carries its bearer token (that is its check-in)."""

    def __init__(
        self, base_url: str, token: str, *, timeout: float = 5.0, transport: httpx.BaseTransport | None = None
    ):
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str) -> httpx.Response:
        try:
            response = self.http.get(path)
        except httpx.HTTPError as exc:
            raise CloudError(f"GET {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise CloudError(f"GET {path}: HTTP {response.status_code} {response.text[:200]}")
        return response

    def current(self) -> RoundInfo:
        response = self._get("/api/v1/rounds/current")
        try:
            data = response.json()
        except ValueError:
            raise CloudError("rounds/current is not JSON") from None
        return RoundInfo.from_json(data)

    def model(self) -> Model:
        """The latest global model (msgpack ``{"v", "t": "model", "version", "layers", "w"}``)."""
        response = self._get("/api/v1/model/latest")
        try:
            data = msgpack.unpackb(response.content, raw=False)
            layers = tuple(_int(x) for x in data["layers"])
            spec = ModelSpec(layers)
            w = np.frombuffer(data["w"], dtype="<f4").astype(np.float32)
            version = _int(data["version"])
        except Exception as exc:  # any malformed body is the same problem for the gateway
            raise CloudError(f"model/latest is malformed: {type(exc).__name__}: {exc}") from None
        if w.shape != (spec.param_count,) or not np.all(np.isfinite(w)):
            raise CloudError(f"model/latest has {w.size} finite-checked weights, the model needs {spec.param_count}")
        return Model(version, layers, w)

    def post(self, agg: Agg, give_up_at: float, stop: threading.Event | None = None) -> str:
        """Post ``agg`` until the cloud answers; returns ``accepted``, ``duplicate`` or the 409 reason.

        Retries connection errors and 5xx with exponential backoff and full jitter until ``give_up_at`` (monotonic
        seconds) or ``stop``; raises ``CloudRefused`` for another 4xx and ``CloudError`` when time runs out.
        """
        body, path = agg.encode(), f"/api/v1/rounds/{agg.round}/aggregates"
        delay, attempt = BACKOFF_FIRST, 0
        while True:
            attempt += 1
            try:
                response = self.http.post(path, content=body, headers={"Content-Type": "application/msgpack"})
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return "duplicate" if _json(response).get("duplicate") else "accepted"
                if response.status_code == 409:
                    return str(_detail(response).get("reason", "conflict"))
                if 400 <= response.status_code < 500:
                    raise CloudRefused(f"POST {path}: HTTP {response.status_code} {response.text[:200]}")
                problem = f"HTTP {response.status_code}"
            pause = random.uniform(0, delay)
            if time.monotonic() + pause > give_up_at or (stop is not None and stop.is_set()):
                raise CloudError(f"POST {path} failed after {attempt} attempts: {problem}")
            log.warning("posting round %d failed (%s); retry %d in %.1f s", agg.round, problem, attempt, pause)
            if stop is not None and stop.wait(pause):
                raise CloudError(f"POST {path} abandoned: stopping")
            if stop is None:
                time.sleep(pause)
            delay = min(delay * 2, BACKOFF_MAX)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _detail(response: httpx.Response) -> dict[str, Any]:
    detail = _json(response).get("detail")
    return detail if isinstance(detail, dict) else {}


__all__ = ["CloudClient", "CloudError", "CloudRefused", "Model", "RoundInfo"]
