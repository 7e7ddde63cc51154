"""``GET /``: the self-contained HTML dashboard (no CDN), which polls ``/api/v1/status``."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@cache
def _page() -> str:
    # A path next to the package, not importlib.resources: that fails when `cloud` resolves as a namespace package
    # (pytest puts tests/ on sys.path, and tests/cloud/ then merges with cloud/).
    return (Path(__file__).resolve().parent.parent / "static" / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard() -> HTMLResponse:
    return HTMLResponse(_page())
