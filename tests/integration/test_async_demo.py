"""``iotfl demo --mode sync|async --chaos slow-devices:20%``: the same small run twice. Sync acks the stragglers'
updates `late` and leaves them out; async counts them (staleness-weighted) in the next round. Neither loses or
double-counts an acknowledged update, and both reports say which mode ran."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from iotfl.datasets import load
from iotfl.demo import run_demo
from iotfl.demo_settings import DemoSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DEVICES, ROUNDS = 10, 3


def _run(tmp: Path, mode: str) -> tuple[int, dict[str, Any]]:
    settings = DemoSettings(devices=DEVICES, gateways=2, rounds=ROUNDS, dataset="sensors", seed=0, broker="mosquitto",
                            round_timeout=4.0, chaos="slow-devices:20%", mode=mode)  # fmt: skip
    out = tmp / f"{mode}.json"
    code = run_demo(settings, load("sensors", 0), out, tmp / mode, Console(quiet=True))
    return code, json.loads(out.read_text()) if out.exists() else {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("async-demo")
    return {mode: _run(tmp, mode) for mode in ("sync", "async")}


def test_sync_acks_stragglers_late_and_async_counts_them(runs: dict[str, tuple[int, dict[str, Any]]]) -> None:
    slow = DEVICES // 5
    for mode, (code, report) in runs.items():
        assert code == 0 and report["mode"] == mode and report["config"]["mode"] == mode
        assert report["chaos"]["lost"] == 0 and report["chaos"]["double"] == 0
        assert report["rounds"][0]["k"] == DEVICES - slow  # round 1: nobody is behind yet
    sync, async_ = runs["sync"][1], runs["async"][1]
    assert sync["chaos"]["acks_seen_by_devices"].get("late", 0) >= slow * (ROUNDS - 1)
    assert [r["k"] for r in sync["rounds"]] == [DEVICES - slow] * ROUNDS
    assert async_["chaos"]["acks_seen_by_devices"].get("late", 0) == 0
    # From round 2 on each round also counts the stragglers' updates of the round before.
    assert [r["k"] for r in async_["rounds"][1:]] == [DEVICES] * (ROUNDS - 1)
    assert sum(r["k"] for r in async_["rounds"]) > sum(r["k"] for r in sync["rounds"])
