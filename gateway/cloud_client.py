"""HTTP to the cloud: poll ``rounds/current``, fetch ``model/latest``, post the round's ``agg`` with retries.

Errors are one small tree: ``CloudError`` (unreachable, bad answer) and its subclass ``CloudRefused`` (a 4xx that
retrying cannot fix, e.g. a wrong token). ``send()`` is one post attempt that returns a ``Delivery`` instead of
raising; the outbox's forwarder builds its never-give-up retry on it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgpack
import numpy as np

from flcore.endpoints import is_loopback
from flcore.messages import Agg
from flcore.model import ModelSpec
from gateway.tls import tls_context

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0


# Answers that judge the aggregate itself, so posting it again cannot change them: 409 (late, future_round,
# base_mismatch), 400 (undecodable, round_mismatch), 413 (too large), 422 (wrong length). Anything else — network
# errors, 5xx, 408, 429, and 401/403/404 (a token or URL the operator can fix) — is worth retrying.
FINAL_REFUSALS = frozenset({400, 409, 413, 422})


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
    # ``async`` accepts updates of earlier rounds with a staleness discount; an unknown or missing mode is ``sync``.
    mode: str = "sync"
    # The fraction of its devices asked to train (0 < F ≤ 1), passed on in the task; None = every device.
    select: float | None = None
    # Epochs of personal-head fine-tuning the task asks of devices (0 = none, also when the cloud does not say).
    personal: int = 0
    # The width each named RAM class trains at (flcore.hetero), passed on in the task; None = the whole model.
    widths: dict[str, float] | None = None

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
                mode="async" if data.get("mode") == "async" else "sync",
                select=_fraction(data.get("select")),
                personal=_int(data.get("personal", 0)),
                widths=_widths(data.get("widths")),
            )
            ModelSpec(info.layers)
        except (KeyError, TypeError, ValueError) as exc:
            raise CloudError(f"rounds/current answer is malformed: {exc}") from None
        if info.state not in ("open", "done") or info.gateway_rounds < 1 or not 0 <= info.personal <= 1000:
            raise CloudError(
                f"rounds/current has state {info.state!r}, gateway_rounds {info.gateway_rounds}, "
                f"personal {info.personal}"
            )
        return info


@dataclass(frozen=True)
class Delivery:
    """One post attempt: ``result`` is ``accepted``, ``duplicate``, a 409 reason, ``refused_<code>``, ``http_<code>``
    or ``unreachable``; ``final`` says whether the cloud has decided (stop retrying)."""

    result: str
    final: bool
    detail: str = ""

    @property
    def delivered(self) -> bool:
        """The cloud holds the aggregate (now or from an earlier attempt)."""
        return self.result in ("accepted", "duplicate")


@dataclass(frozen=True)
class Model:
    version: int
    layers: tuple[int, ...]
    w: np.ndarray


def _fraction(value: Any) -> float | None:
    """An optional fraction in (0, 1]; null or absent is None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError(f"select must be a fraction in (0, 1], got {value!r}")
    return float(value)


def _widths(value: Any) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1
        for k, v in value.items()
    ):
        raise ValueError(f"widths must map RAM classes to fractions in (0, 1], got {value!r:.80}")
    return {k: float(v) for k, v in value.items()} or None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


class CloudClient:
    """A synchronous client for one gateway; every request carries its bearer token (that is its check-in)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        ca: Path | None = None,
    ):
        """``ca``: the CA file an https:// cloud's certificate must chain to (default: the system's CAs)."""
        host = urlsplit(base_url).hostname or ""
        if base_url.startswith("http:") and not is_loopback(host):
            log.warning(
                "cloud %s is plain http://: the gateway's token crosses the network in clear; for a local demo only "
                "(use https://, see docs/security.md)",
                base_url,
            )
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
            transport=transport,
            # httpx's default context (certifi's CAs) already requires TLS 1.2 or newer
            verify=True if ca is None else tls_context(ca),
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

    def send(self, round: int, body: bytes) -> Delivery:
        """One attempt to post an encoded ``agg`` for ``round``; never raises for HTTP or network problems."""
        path = f"/api/v1/rounds/{round}/aggregates"
        try:
            response = self.http.post(path, content=body, headers={"Content-Type": "application/msgpack"})
        except httpx.HTTPError as exc:
            return Delivery("unreachable", False, f"{type(exc).__name__}: {exc}")
        code = response.status_code
        if code == 200:
            answer = _json(response)
            if answer.get("duplicate"):
                return Delivery("duplicate", True)
            counted_in = answer.get("round", round)
            note = "" if counted_in == round else f"late, counted in round {counted_in}"
            return Delivery("accepted", True, note)
        detail = f"HTTP {code} {response.text[:200]}"
        if code == 409:
            return Delivery(str(_detail(response).get("reason", "conflict")), True, detail)
        if code in FINAL_REFUSALS:
            return Delivery(f"refused_{code}", True, detail)
        return Delivery(f"http_{code}", False, detail)

    def report(self, gw: str, body: dict[str, Any]) -> None:
        """Post one fleet report (``gateway.reporter``); ``CloudError`` unless the cloud stored it."""
        path = f"/api/v1/gateways/{gw}/report"
        try:
            response = self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise CloudError(f"POST {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise CloudError(f"POST {path}: HTTP {response.status_code} {response.text[:200]}")

    def post(self, agg: Agg, give_up_at: float, stop: threading.Event | None = None) -> str:
        """Post ``agg`` until the cloud answers; returns ``accepted``, ``duplicate`` or the 409 reason.

        A bounded helper for tools and tests; the gateway service posts through its outbox instead
        (``gateway.forwarder``), which never gives up. Retries connection errors, 5xx, 408 and 429 with
        exponential backoff and full jitter until ``give_up_at`` (monotonic seconds) or ``stop``; raises
        ``CloudRefused`` for another 4xx and ``CloudError`` when time runs out.
        """
        body, path = agg.encode(), f"/api/v1/rounds/{agg.round}/aggregates"
        delay, attempt = BACKOFF_FIRST, 0
        while True:
            attempt += 1
            outcome = self.send(agg.round, body)
            if outcome.final and not outcome.result.startswith("refused_"):
                return outcome.result
            code = outcome.result.removeprefix("refused_").removeprefix("http_")
            if code.isdigit() and 400 <= int(code) < 500 and int(code) not in (408, 429):
                raise CloudRefused(f"POST {path}: {outcome.detail}")
            problem = outcome.detail or outcome.result
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


__all__ = ["CloudClient", "CloudError", "CloudRefused", "Delivery", "FINAL_REFUSALS", "Model", "RoundInfo"]
