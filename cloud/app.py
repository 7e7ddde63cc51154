"""``create_app``: the FastAPI aggregator over one database, with its deadline task in the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI

from cloud import api
from cloud.auth import Tokens
from cloud.errors import CloudError
from cloud.fleet import Fleet
from cloud.metrics import Metrics
from cloud.rounds import Rounds
from cloud.settings import CloudSettings
from cloud.storage import Storage
from flcore.datasets import Dataset

log = logging.getLogger(__name__)

TICK_SECONDS = 0.2
_ERROR_LOG_EVERY = 10.0  # seconds between repeated "deadline check failed" lines while the database is down


def create_app(settings: CloudSettings, dataset: Dataset) -> FastAPI:
    """The aggregator for ``dataset``'s model; opens (or resumes from) ``settings.db`` before returning."""
    if not settings.gateway_tokens and not settings.gateway_token_hashes:
        raise CloudError(
            "no gateway tokens: give each gateway one, e.g. --gateway-token gw0=SECRET "
            "or IOTFL_GATEWAY_TOKENS='gw0=SECRET0,gw1=SECRET1' (or their sha256: IOTFL_GATEWAY_TOKEN_HASHES)"
        )
    if dataset.x_test.shape[0] == 0 or dataset.x_test.shape[1] != dataset.layers[0]:
        raise CloudError(f"dataset {dataset.name!r} has no usable held-out split for layers {list(dataset.layers)}")
    tokens = Tokens(settings.gateway_tokens, settings.gateway_token_hashes)
    metrics = Metrics()
    storage = Storage(settings.db)
    try:
        rounds = Rounds(settings, dataset, storage, metrics, tokens.hashes)
        fleet = Fleet(storage)
    except BaseException:
        storage.close()
        raise
    metrics.watch(rounds.gauges)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_check_deadlines(rounds), name="iotfl-deadlines")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # Wait for a tick still running in its thread before the engine goes away.
            await asyncio.to_thread(rounds.close)

    app = FastAPI(
        title="iotfl cloud",
        summary="Global FedAvg over gateway aggregates for an IoT fleet",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.rounds = rounds
    app.state.tokens = tokens
    app.state.metrics = metrics
    app.state.fleet = fleet
    app.include_router(api.router())
    return app


async def _check_deadlines(rounds: Rounds) -> None:
    """Close or extend rounds at their deadline; a failing check is logged and retried, never fatal."""
    last_error = -_ERROR_LOG_EVERY
    while True:
        try:
            await asyncio.to_thread(rounds.tick)
        except Exception as exc:
            if time.monotonic() - last_error >= _ERROR_LOG_EVERY:
                last_error = time.monotonic()
                log.error("deadline check failed: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(TICK_SECONDS)


__all__ = ["create_app"]
