"""The cloud's routes: ``/api/v1/…`` for gateways and tools, plus ``/``, ``/healthz`` and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter

from cloud.api import aggregates, dashboard, fleet, model, rounds, status

PREFIX = "/api/v1"


def router() -> APIRouter:
    """All routes, assembled (the per-concept routers stay in their modules)."""
    top = APIRouter()
    api = APIRouter(prefix=PREFIX)
    for part in (aggregates.router, rounds.router, status.api, model.router, fleet.router):
        api.include_router(part, tags=["api"])
    top.include_router(api)
    top.include_router(status.root, tags=["ops"])
    top.include_router(dashboard.router)
    return top


__all__ = ["PREFIX", "router"]
