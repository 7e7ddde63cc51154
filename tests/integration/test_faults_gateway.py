"""Gateway ``kill -9`` in each window of an update's life — received but not journaled, journaled but not acked,
acked but not forwarded, queued but not posted — then a restart: 0 lost, 0 double.

The gateway's documented test hook ``IOTFL_PAUSE_AT`` (gateway/pause.py) holds it at the named point; the test waits
for its ``PAUSED at`` log line and kills it there, so each window is hit every time.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from faults_harness import Cloud, Device, GatewayProcess, check_counts, wait_for

from flcore.datasets import Dataset, sensors
from iotfl.broker import Broker, free_port

pytestmark = pytest.mark.integration

DEVICES = 6


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sensors(0, samples=200)


def journal_and_outbox(gateway: GatewayProcess) -> tuple[set[str], int]:
    """What the killed gateway had committed: the devices journaled for round 1 and the pending outbox posts."""
    db = sqlite3.connect(gateway.dir / "gw0-state.sqlite3")
    try:
        journaled = {dev for (dev,) in db.execute("SELECT dev FROM journal_updates WHERE round = 1")}
        pending = db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
    finally:
        db.close()
    return journaled, pending


@pytest.mark.parametrize(
    ("pause_at", "journaled", "pending", "after_restart"),
    [
        ("before_journal@3", 2, 0, "resuming from the journal"),
        ("before_ack@3", 3, 0, "resuming from the journal"),
        ("before_forward", DEVICES, 0, "resuming from the journal"),
        # the restarted forwarder delivers the pending post (whether the round loop sees the round still open or
        # already closed depends on which thread runs first, so its own log line is no fixed mark)
        ("before_post", DEVICES, 1, "round 1 posted (accepted)"),
    ],
)
def test_gateway_kill_loses_and_doubles_nothing(
    mosquitto: Broker,
    tmp_path: Path,
    dataset: Dataset,
    pause_at: str,
    journaled: int,
    pending: int,
    after_restart: str,
) -> None:
    cloud = Cloud(tmp_path, dataset, free_port(), rounds=1)
    cloud.start()
    gateway = GatewayProcess(tmp_path, mosquitto.url, cloud.url, quorum=DEVICES)
    fleet = [Device(mosquitto.url, i) for i in range(DEVICES)]
    try:
        gateway.start(pause_at=pause_at)
        wait_for(lambda: all(d.task_round() == 1 for d in fleet), what="every device has task 1")
        for dev in fleet:
            dev.allowed = 1
        point = pause_at.partition("@")[0]
        gateway.wait_log(f"PAUSED at {point}")
        gateway.kill()
        acked_before = {d.dev for d in fleet if d.counted(1)}
        committed, queued = journal_and_outbox(gateway)
        assert acked_before <= committed, "a device was acked for an update the journal does not hold"
        assert (len(committed), queued) == (journaled, pending)
        assert cloud.round(1)["state"] == "open"  # the aggregate has not reached the cloud
        gateway.start()
        counts = check_counts(cloud, 1, fleet)
        assert counts["k"] == DEVICES, "every device re-sent until acked, so every one counts, once"
        gateway.wait_log(after_restart, timeout=5)
        if point == "before_ack":
            # the held update was journaled but never acked: after the restart its re-send is answered `duplicate`
            assert any(d.statuses(1) == {"duplicate"} for d in fleet)
        print(f"kill -9 at {pause_at}: journaled {len(committed)}, acked {len(acked_before)} before the kill; {counts}")
    finally:
        for dev in fleet:
            dev.close()
        gateway.stop()
        cloud.stop()
