"""The dashboard in a real headless Chromium (Debian ``chromium`` driven by playwright) during a running demo: the
numbers on the page are the REST API's, the chart has one point per finished round, and a screenshot is kept
(tests/artifacts/dashboard.png, and dashboard-running.png mid-demo; gitignored)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from iotfl.demo import follow_rounds, start_stack
from iotfl.demo_settings import DemoSettings

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The page polls every 2 s; a page that has not caught up with the API within this many seconds is wrong.
CATCH_UP = 20.0


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs it as root (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the `test` extra")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def _rows(page: Any, tbody: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"#{tbody} tr", "rows => rows.map(r => [...r.querySelectorAll('td')].map(td => td.textContent.trim()))"
    )


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _expected(api: httpx.Client) -> dict[str, Any]:
    """What the page must show for the API's current answers."""
    status = api.get("/api/v1/status").json()
    overview = api.get("/api/v1/gateways").json()
    devices = api.get("/api/v1/devices", params={"offset": 0, "limit": 50}).json()
    history = status["history"]
    return {
        "round": f"{status['round']} / {status['total_rounds']}",
        "version": str(status["model_version"]),
        "accuracy": _pct(history[-1]["accuracy"] if history else status["initial_accuracy"]),
        "devices-seen": str(status["devices_seen"]),
        "state": status["state"],
        "history": [
            [
                str(h["round"]),
                _pct(h["accuracy"]),
                f"{h['loss']:.3f}",
                f"{h['k']:,}",
                f"{h['n']:,}",
                f"{h['bytes_up']:,}",
            ]
            for h in reversed(history)
        ],
        "gateways": [
            [g["id"], f"{g['devices_online']} / {g['devices_known']}", f"{g['bytes_up']:,}", str(g["rounds_reported"])]
            for g in overview["gateways"]
        ],
        "rejected": [[reason, f"{n:,}"] for reason, n in overview["rejected"].items()],
        "devices": [[d["dev"], d["gw"], d["state"], d["ram_class"] or "–"] for d in devices["items"]],
        "devices-total": f"({devices['total']:,})",
        "chart_rounds": [str(h["round"]) for h in history if h["accuracy"] is not None],
    }


def _shown(page: Any) -> dict[str, Any]:
    text = {name: page.text_content(f"#{name}").strip() for name in ("round", "version", "accuracy", "devices-seen")}
    return {
        **text,
        "state": page.text_content("#state").strip(),
        "history": [row[:6] for row in _rows(page, "history")],
        "gateways": [[r[0], r[2], r[3], r[4]] for r in _rows(page, "gateways")],
        "rejected": [r[:2] for r in _rows(page, "rejected")],
        "devices": [[r[0], r[1], r[2], r[5]] for r in _rows(page, "devices")],
        "devices-total": page.text_content("#devices-total").strip(),
        "chart_rounds": page.eval_on_selector_all("#chart circle.pt-acc", "cs => cs.map(c => c.dataset.round)"),
    }


def _next_poll(page: Any) -> None:
    polls = int(page.get_attribute("body", "data-polls") or 0)
    page.wait_for_function(f"Number(document.body.dataset.polls || 0) > {polls}", timeout=10_000)


def _page_matches_api(page: Any, api: httpx.Client) -> tuple[dict[str, Any], dict[str, Any]]:
    """Poll until one render shows what the API answered just before it (device statuses keep changing while the
    fleet runs); returns the last (expected, shown) pair for the caller's assertion."""
    give_up = time.monotonic() + CATCH_UP
    while True:
        expected = _expected(api)
        _next_poll(page)
        _next_poll(page)  # a whole poll that started after the API answers above
        shown = _shown(page)
        if shown == expected or time.monotonic() > give_up:
            return expected, shown


def test_dashboard_shows_the_api_numbers_and_one_chart_point_per_round(mosquitto, tmp_path: Path, browser_page):
    settings = DemoSettings(
        devices=12, gateways=2, rounds=3, dataset="digits", alpha=0.5, seed=3, broker=mosquitto.url, round_timeout=20
    )
    stack, cloud, _report = start_stack(settings, tmp_path, Console(quiet=True))
    page = browser_page
    try:
        with httpx.Client(base_url=cloud, timeout=5.0) as api:
            page.goto(f"{cloud}/", wait_until="load")
            _next_poll(page)
            # while the demo runs: one progress row per gateway, no error, the devices listed from their statuses
            assert [r[0] for r in _rows(page, "progress")] == ["gw0", "gw1"]
            assert page.text_content("#error") == ""
            page.wait_for_function("document.querySelectorAll('#devices tr').length === 12", timeout=15_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-running.png"), full_page=True)

            final, _seconds = follow_rounds(settings, stack, cloud, Console(quiet=True))
            assert final["state"] == "done" and len(final["history"]) == 3

            expected, shown = _page_matches_api(page, api)
            assert shown == expected
            assert shown["chart_rounds"] == ["1", "2", "3"]  # one point per finished round
            assert page.locator("#chart circle.pt-loss").count() == 3
            assert page.text_content("#state") == "done"
            # every device reported with its RAM class and a battery level; paging reports the total
            assert len(shown["devices"]) == 12 and all(d[3] != "–" for d in shown["devices"])
            assert page.text_content("#page") == "page 1 of 1"

            shot = ARTIFACTS / "dashboard.png"
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            shutil.copyfile(tmp_path / "dashboard.png", shot)
            print(f"dashboard screenshot: {shot}")
            assert shot.stat().st_size > 10_000
    finally:
        stack.stop()


def test_dashboard_shows_personalized_and_global_local_accuracy(mosquitto, tmp_path: Path, browser_page):
    settings = DemoSettings(devices=6, gateways=1, rounds=2, dataset="sensors", alpha=0.1, seed=1, broker=mosquitto.url,
                            round_timeout=20, personal_epochs=2, battery=False)  # fmt: skip
    stack, cloud, _report = start_stack(settings, tmp_path, Console(quiet=True))
    page = browser_page
    try:
        with httpx.Client(base_url=cloud, timeout=5.0) as api:
            page.goto(f"{cloud}/", wait_until="load")
            final, _seconds = follow_rounds(settings, stack, cloud, Console(quiet=True))
            history = api.get("/api/v1/status").json()["history"]
            expected = [[_pct(h["l_accuracy"]), _pct(h["p_accuracy"])] for h in reversed(history)]
            give_up = time.monotonic() + CATCH_UP
            while (shown := [r[7:9] for r in _rows(page, "history")]) != expected and time.monotonic() < give_up:
                _next_poll(page)
            assert final["state"] == "done" and shown == expected
            circles = page.eval_on_selector_all("#chart circle.pt-pacc", "cs => cs.map(c => c.dataset.round)")
            assert circles == ["1", "2"]  # one personalized point per round its devices reported
            page.screenshot(path=str(tmp_path / "dashboard-personal.png"), full_page=True)
    finally:
        stack.stop()
