"""The fog tier with two levels: simulated devices → 2 site gateways → 1 region gateway (`iotfl fog`) → cloud. The
same fleet, seed and rounds run flat (sites → cloud) too; the hierarchy must land in the same accuracy band."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import pytest
from scaleout_harness import spawn_fog, stack_logs, start_cloud, wait_round_closed

from iotfl.demo_settings import DemoSettings
from iotfl.stack import Stack

pytestmark = pytest.mark.integration

SITES = ("gw0", "gw1")
ROUNDS = 3
SEED = 1
DEVICES = 12
ROUND_TIMEOUT = 20.0
# Two FedAvg runs of the same seed differ only by which updates made each round's close: a few points apart.
BAND = 0.12


def _run(broker: str, workdir: Path, fog: bool) -> dict:
    """One short training run; returns the cloud's status once its last round closed."""
    workdir.mkdir()
    stack = Stack(workdir)
    lr, epochs, batch = DemoSettings(dataset="digits").training()
    sites = {gw: secrets.token_urlsafe(12) for gw in SITES}
    region = {"region0": secrets.token_urlsafe(12)}
    cloud = start_cloud(
        stack,
        workdir,
        region if fog else sites,
        rounds=ROUNDS,
        round_timeout=ROUND_TIMEOUT + 15,
        extra=[
            "--min-gateways",
            "1" if fog else str(len(SITES)),
            "--seed",
            str(SEED),
            "--lr",
            str(lr),
            "--epochs",
            str(epochs),
            "--batch",
            str(batch),
        ],
    )
    try:
        upstream = ["--cloud", cloud]
        if fog:
            fog_url = spawn_fog(stack, workdir, cloud, region["region0"], sites, round_timeout=ROUND_TIMEOUT + 15)
            upstream = ["--parent", fog_url]
        for gw, token in sites.items():
            stack.spawn(
                gw,
                [
                    "gateway",
                    "--id",
                    gw,
                    "--broker",
                    broker,
                    *upstream,
                    "--token",
                    token,
                    "--round-timeout",
                    str(ROUND_TIMEOUT),
                    "--state-dir",
                    str(workdir / gw),
                ],
            )
        stack.spawn(
            "fleet",
            [
                "fleet",
                "--devices",
                str(DEVICES),
                "--gateways",
                str(len(SITES)),
                "--broker",
                broker,
                "--dataset",
                "digits",
                "--alpha",
                "0.5",
                "--seed",
                str(SEED),
            ],
        )
        wait_round_closed(cloud, ROUNDS, stack, timeout=ROUNDS * (ROUND_TIMEOUT + 25) + 60)
        status = httpx.get(f"{cloud}/api/v1/status", timeout=5).json()
        assert status["state"] == "done", stack_logs(stack)
        return dict(status)
    finally:
        stack.stop()


def test_site_region_cloud_lands_in_the_flat_runs_accuracy_band(mosquitto, tmp_path: Path) -> None:
    started = time.monotonic()
    flat = _run(mosquitto.url, tmp_path / "flat", fog=False)
    fogged = _run(mosquitto.url, tmp_path / "fog", fog=True)
    # The cloud saw only the region gateway, with every site's devices inside its aggregates.
    assert [g["id"] for g in fogged["gateways"]] == ["region0"]
    assert fogged["gateways"][0]["rounds_reported"] == ROUNDS
    assert {g["id"] for g in flat["gateways"]} == set(SITES)
    for run in (flat, fogged):
        history = run["history"]
        assert [h["round"] for h in history] == list(range(1, ROUNDS + 1))
        assert all(h["k"] >= 1 and h["n"] >= h["k"] for h in history)
        assert history[-1]["accuracy"] > history[0]["accuracy"] - BAND / 2
    assert fogged["devices_seen"] == flat["devices_seen"]
    assert sum(h["k"] for h in fogged["history"]) == sum(h["k"] for h in flat["history"])
    final_flat, final_fog = flat["history"][-1]["accuracy"], fogged["history"][-1]["accuracy"]
    assert abs(final_fog - final_flat) <= BAND, (final_flat, final_fog)
    print(f"flat {final_flat:.3f} vs fog {final_fog:.3f} after {ROUNDS} rounds ({time.monotonic() - started:.0f} s)")
