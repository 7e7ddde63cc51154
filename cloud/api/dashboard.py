"""``GET /``: the dashboard page, and ``GET /static/{name}`` its script and style (in the package: no CDN, it works
on an offline site). The page polls ``/api/v1/status``, ``/api/v1/gateways`` and ``/api/v1/devices``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import HTMLResponse, Response

router = APIRouter()

# A path next to the package, not importlib.resources: that fails when `cloud` resolves as a namespace package
# (pytest puts tests/ on sys.path, and tests/cloud/ then merges with cloud/).
STATIC = Path(__file__).resolve().parent.parent / "static"
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}


@cache
def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard() -> HTMLResponse:
    return HTMLResponse(_read("index.html"))


@router.get("/static/{name}", include_in_schema=False)
def asset(name: str) -> Response:
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no asset {name!r}")
    return Response(_read(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
