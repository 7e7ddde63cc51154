"""Broker ``kill -9`` mid-round, restarted on the same port with persistence on: every round completes and each
update the gateway acknowledged is counted exactly once (3 trials, one per round, killed at different points)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faults_harness import Cloud, Device, GatewayProcess, check_counts, wait_for

from flcore.datasets import Dataset, sensors
from iotfl.broker import free_port, mosquitto_path, start_broker

pytestmark = pytest.mark.integration

DEVICES = 8
OUTAGE = 0.5  # seconds between the kill and the restart


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sensors(0, samples=200)


def test_broker_kill_mid_round_loses_and_doubles_nothing(tmp_path: Path, dataset: Dataset) -> None:
    if mosquitto_path() is None:
        pytest.fail("mosquitto is not installed: run `apt-get install -y mosquitto`")
    workdir = tmp_path / "broker"
    broker = start_broker(free_port(), prefer="mosquitto", workdir=workdir, persistent=True)
    cloud = Cloud(tmp_path, dataset, free_port(), rounds=3)
    cloud.start()
    gateway = GatewayProcess(tmp_path, broker.url, cloud.url, quorum=DEVICES)
    fleet = [Device(broker.url, i) for i in range(DEVICES)]
    results = []
    try:
        gateway.start()
        # Trial r kills the broker after `kill_after[r]` devices released their update, without waiting for acks
        # (r=1), once that many were acked (r=2), and with every update in flight at once (r=3).
        for r, kill_after, wait_acks in ((1, 3, False), (2, 5, True), (3, DEVICES, False)):
            wait_for(lambda r=r: all(d.task_round() == r for d in fleet), what=f"every device has task {r}")
            for i, dev in enumerate(fleet):
                if i == kill_after:
                    if wait_acks:
                        wait_for(lambda r=r, i=i: all(d.counted(r) for d in fleet[:i]), what="acks before the kill")
                    broker.kill()
                    time.sleep(OUTAGE)
                    broker = start_broker(broker.port, prefer="mosquitto", workdir=workdir, persistent=True)
                dev.allowed = r
            if kill_after == DEVICES:
                broker.kill()
                time.sleep(OUTAGE)
                broker = start_broker(broker.port, prefer="mosquitto", workdir=workdir, persistent=True)
            counts = check_counts(cloud, r, fleet)
            assert counts["k"] == DEVICES, f"round {r}: every device re-sent until acked, so all {DEVICES} count"
            results.append(counts)
        assert "round 3 posted (accepted)" in gateway.text()
        print(f"broker kill -9 trials: {results}, re-sends {sum(d.sends for d in fleet) - 3 * DEVICES}")
    finally:
        for dev in fleet:
            dev.close()
        gateway.stop()
        cloud.stop()
        broker.stop()
