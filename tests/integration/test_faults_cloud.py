"""The cloud is down across a round boundary: the gateway closes the round, keeps its aggregate in the durable outbox
and keeps serving; the cloud comes back on the same port and database and the outbox delivers: 0 lost, 0 double.

The outage lasts ``IOTFL_FAULT_OUTAGE`` seconds (default 30, the acceptance figure; a shorter one speeds up a local
run: ``IOTFL_FAULT_OUTAGE=6 pytest tests/integration/test_faults_cloud.py``). The cloud's round timeout is shorter than
the outage, so its round-1 deadline passes while it is down.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from faults_harness import Cloud, Device, GatewayProcess, check_counts, wait_for

from flcore.datasets import Dataset, sensors
from gateway.health import read_status
from iotfl.broker import Broker, free_port

pytestmark = pytest.mark.integration

DEVICES = 5
OUTAGE = float(os.environ.get("IOTFL_FAULT_OUTAGE", "30"))


def test_outbox_delivers_after_a_cloud_outage(mosquitto: Broker, tmp_path: Path) -> None:
    dataset: Dataset = sensors(0, samples=200)
    cloud = Cloud(tmp_path, dataset, free_port(), rounds=2, round_timeout=OUTAGE / 2 + 2)
    cloud.start()
    gateway = GatewayProcess(tmp_path, mosquitto.url, cloud.url, quorum=DEVICES)
    status = gateway.dir / "gw0-status.json"
    fleet = [Device(mosquitto.url, i) for i in range(DEVICES)]
    try:
        gateway.start()
        wait_for(lambda: all(d.task_round() == 1 for d in fleet), what="every device has task 1")
        cloud.stop()
        down_at = time.monotonic()
        for dev in fleet:
            dev.allowed = 2
        # The gateway closes round 1 and keeps serving while its aggregate waits in the outbox.
        gateway.wait_log("round 1 closed: k=5")
        assert all(d.counted(1) for d in fleet)
        during = wait_for(
            lambda: (s := read_status(status)) and s["outbox_depth"] == 1 and s["cloud_reachable"] is False and s,
            what="status file: outbox depth 1, cloud unreachable",
        )
        assert during["round"] == 1 and during["outbox_oldest_s"] >= 0
        gateway.wait_log("posting round 1 failed")
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
        cloud.start()
        back_at = time.monotonic()
        first = check_counts(cloud, 1, fleet)
        delivered_in = time.monotonic() - back_at
        second = check_counts(cloud, 2, fleet)
        assert first["k"] == second["k"] == DEVICES
        after = wait_for(lambda: (s := read_status(status)) and s["outbox_depth"] == 0 and s, what="outbox empty")
        assert after["forwarded"] >= 1 and after["refused"] == 0
        log = gateway.text()
        assert "round 1 posted (accepted)" in log and "round 2 posted (accepted)" in log
        print(f"cloud down {OUTAGE:.0f} s: round 1 delivered {delivered_in:.1f} s after it returned; {first}, {second}")
    finally:
        for dev in fleet:
            dev.close()
        gateway.stop()
        cloud.stop()
