"""Speaking to a cloud under test over HTTP: the gateways' tokens, aggregates, and typed GETs."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgpack
import numpy as np

from cloud.settings import CloudSettings
from flcore.datasets import Dataset
from flcore.messages import Agg
from flcore.model import ModelSpec

TOKENS = {"gw0": "token-zero", "gw1": "token-one"}


@dataclass
class Cloud:
    """A running cloud and helpers to speak its API."""

    url: str
    settings: CloudSettings
    dataset: Dataset
    http: httpx.Client
    resources: ExitStack
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(7))

    def stop(self) -> None:
        """Shut this cloud down (its lifespan ends, the database is released)."""
        self.resources.close()

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.dataset.layers)

    def auth(self, gw: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[gw]}"}

    def agg(self, gw: str, rnd: int, base: int | None = None, n: int = 10, k: int = 2, **kw: Any) -> Agg:
        total = kw.pop("sum", None)
        if total is None:
            total = self.rng.normal(0.0, 0.1, self.spec.param_count).astype(np.float32) * n
        return Agg(
            gw,
            rnd,
            rnd - 1 if base is None else base,
            n,
            k,
            total,
            kw.pop("loss", 0.7),
            kw.pop("bytes_up", 1000),
            tuple(kw.pop("devices", ())),
            kw.pop("pers", None),
            kw.pop("cover", None),
        )

    def post(
        self, agg: Agg | bytes, gw: str | None = None, rnd: int | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        body = agg if isinstance(agg, bytes) else agg.encode()
        path_round = rnd if rnd is not None else agg.round  # type: ignore[union-attr]
        sender = gw if gw is not None else agg.gw  # type: ignore[union-attr]
        hdrs = {"Content-Type": "application/msgpack", **self.auth(sender), **(headers or {})}
        return self.http.post(f"/api/v1/rounds/{path_round}/aggregates", content=body, headers=hdrs)

    def get(self, path: str, gw: str | None = None, **kw: Any) -> Any:
        response = self.http.get(path, headers=self.auth(gw) if gw else None, **kw)
        response.raise_for_status()
        return response.json()

    def checkin(self, *gateways: str) -> None:
        for gw in gateways:
            self.get("/api/v1/rounds/current", gw=gw)

    def current(self) -> dict[str, Any]:
        return self.get("/api/v1/rounds/current")

    def round(self, r: int) -> dict[str, Any]:
        return self.get(f"/api/v1/rounds/{r}")

    def status(self) -> dict[str, Any]:
        return self.get("/api/v1/status")

    def model(self) -> tuple[int, np.ndarray]:
        response = self.http.get("/api/v1/model/latest")
        response.raise_for_status()
        packed = msgpack.unpackb(response.content)
        return packed["version"], np.frombuffer(packed["w"], dtype="<f4")

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            time.sleep(0.05)
