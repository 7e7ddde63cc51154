"""Prometheus metrics of a real gateway service (its own metrics port) and the real cloud after one round of real
traffic over mosquitto, scraped over HTTP and parsed with prometheus-client's parser; and the Grafana dashboard
in deploy/ asks only for metrics those scrapes export."""

from __future__ import annotations

import json
import re
import secrets
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from gateway_peers import WAIT, Device, devices, wait_for
from prometheus_scrape import Scrape, scrape
from typer.testing import CliRunner

from cloud.server import running
from cloud.settings import CloudSettings
from flcore.datasets import sensors
from flcore.messages import Status, Task, Up
from flcore.quantize import quantize
from gateway.service import run
from gateway.settings import GatewaySettings
from iotfl.broker import free_port, start_broker
from iotfl.cli import app

TOKEN = "gw0-metrics"
CHUNK = 64
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "iotfl.json"


@dataclass(frozen=True)
class Run:
    gateway: Scrape
    cloud: Scrape
    sent: list[bytes]  # every update payload published, in order


def signed(dev: str, task: Task, seq: int, key: bytes) -> bytes:
    rng = np.random.default_rng(sum(dev.encode()) + seq)
    scales, q = quantize(rng.normal(0, 0.05, task.w.size).astype(np.float32), CHUNK)
    return Up(dev, task.round, task.base, 10, 0.4, seq, CHUNK, scales, q).encode(key=key)


def answer(device: Device, payload: bytes) -> tuple[str, str]:
    device.send(payload)
    ack = device.ack()
    return ack.status, ack.reason


@pytest.fixture(scope="module")
def one_round(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One round: d1–d3 accepted, d1 re-sends (duplicate), a forgery for d3 (rejected ``signature``); the gateway
    closes at quorum 3, forwards, and the cloud closes its one round."""
    tmp = tmp_path_factory.mktemp("metrics")
    keys = {dev: secrets.token_bytes(32) for dev in ("d1", "d2", "d3")}
    key_file = tmp / "keys.json"
    key_file.write_text(json.dumps({dev: key.hex() for dev, key in keys.items()}))
    key_file.chmod(0o600)
    dataset = sensors(0, samples=200)
    broker = start_broker(prefer="mosquitto", workdir=tmp / "broker")
    db = f"sqlite:///{tmp / 'cloud.db'}"
    cloud_settings = CloudSettings(db=db, port=0, gateway_tokens={"gw0": TOKEN}, dataset=dataset.name, rounds=1,
                                   round_timeout=60.0, chunk=CHUNK, min_gateways=1)  # fmt: skip
    port = free_port()
    stop = threading.Event()
    try:
        with running(cloud_settings, dataset) as cloud_url, devices(broker.url, "d1", "d2", "d3") as (d1, d2, d3):
            for device in (d1, d2, d3):
                device.status(Status(device.dev, "online", gw="gw0"))
            settings = GatewaySettings(id="gw0", broker=broker.url, cloud=cloud_url, token=TOKEN, state_dir=tmp / "gw",
                                       quorum=3, round_timeout=30, poll_interval=0.1, device_keys=key_file,
                                       metrics_port=port)  # fmt: skip
            gateway = threading.Thread(target=run, args=(settings, stop), name="gateway", daemon=True)
            gateway.start()
            task = d1.tasks.get(timeout=WAIT)
            sent = [
                signed("d1", task, 1, keys["d1"]),
                signed("d1", task, 1, keys["d1"]),
                signed("d3", task, 1, keys["d1"]),  # d3's update under d1's key
                signed("d2", task, 1, keys["d2"]),
                signed("d3", task, 2, keys["d3"]),
            ]
            answers = [answer(device, payload) for device, payload in zip((d1, d1, d3, d2, d3), sent, strict=True)]
            assert answers == [("accepted", ""), ("duplicate", "duplicate"), ("rejected", "signature"),
                               ("accepted", ""), ("accepted", "")]  # fmt: skip
            gateway_url = f"http://127.0.0.1:{port}/metrics"
            refused = httpx.post(f"{cloud_url}/api/v1/rounds/1/aggregates", content=b"\x80", timeout=10)
            assert refused.status_code == 401  # a rejection at the cloud too: no token

            def settled() -> Scrape | None:
                got = scrape(gateway_url)
                # The snapshot reads the outbox before the forwarder's count: both, to see the post's end.
                forwarded = got.value("iotfl_gateway_rounds_forwarded_total") == 1
                emptied = got.value("iotfl_gateway_outbox_depth") == 0
                return (
                    got if forwarded and emptied and got.value("iotfl_gateway_broker_dropped_reported") == 0 else None
                )

            gateway_scrape = wait_for(
                settled, what="the round forwarded, the outbox empty, the broker's $SYS counter seen"
            )
            cloud_scrape = wait_for(
                lambda: (got := scrape(f"{cloud_url}/metrics")).value("iotfl_rounds_closed_total") == 1 and got,
                what="round 1 closed at the cloud",
            )
            yield Run(gateway_scrape, cloud_scrape, sent)
            stop.set()
            gateway.join(WAIT)
            assert not gateway.is_alive()
    finally:
        stop.set()
        broker.stop()


def test_gateway_counts_updates_bytes_latency_and_forwarding(one_round: Run) -> None:
    g = one_round.gateway
    assert g.labelled("iotfl_gateway_updates_total", "result") == {
        "accepted": 3, "duplicate": 1, "late": 0, "rejected": 1
    }  # fmt: skip
    assert g.labelled("iotfl_gateway_updates_rejected_total", "reason") == {"signature": 1}
    assert g.labelled("iotfl_gateway_messages_total", "outcome") == {
        "parked": 0, "stale": 0, "invalid_topic": 0, "journal_error": 0
    }  # fmt: skip
    assert g.value("iotfl_gateway_update_bytes_total") == sum(len(p) for p in one_round.sent)
    # One observation per PUBACKed update, whatever its answer; each took a positive time.
    assert g.value("iotfl_gateway_ingest_seconds_count") == len(one_round.sent)
    assert g.value("iotfl_gateway_ingest_seconds_bucket", le="+Inf") == len(one_round.sent)
    assert 0 < g.value("iotfl_gateway_ingest_seconds_sum") < len(one_round.sent) * WAIT
    assert g.value("iotfl_gateway_rounds_forwarded_total") == 1 and g.value("iotfl_gateway_rounds_refused_total") == 0
    assert g.value("iotfl_gateway_outbox_depth") == 0 and g.value("iotfl_gateway_outbox_oldest_seconds") == 0
    assert g.value("iotfl_gateway_broker_dropped_total") == 0
    assert g.value("iotfl_gateway_devices_connected") == 3
    assert g.value("iotfl_gateway_round") == 1 and g.value("iotfl_gateway_mqtt_connected") == 1
    assert g.value("iotfl_gateway_cloud_reachable") == 1


def test_cloud_sees_the_round_the_gateway_forwarded(one_round: Run) -> None:
    c = one_round.cloud
    assert c.labelled("iotfl_aggregates_total", "result") == {
        "accepted": 1, "carried": 0, "duplicate": 0, "late": 0, "rejected": 1
    }  # fmt: skip
    assert c.labelled("iotfl_aggregates_rejected_total", "reason") == {"unauthorized": 1}
    assert c.value("iotfl_aggregate_post_seconds_count") == 2
    assert c.value("iotfl_devices_seen") == 3 and c.value("iotfl_gateways_seen") == 1
    assert c.value("iotfl_model_version") == 1 and c.value("iotfl_done") == 1


def test_every_dashboard_metric_is_exported(one_round: Run) -> None:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    exprs += [variable["definition"] for variable in board["templating"]["list"]]
    named = {name for expr in exprs for name in re.findall(r"\biotfl_[a-z_]+", expr)}
    exported = one_round.gateway.names | one_round.cloud.names
    assert named and named <= exported, f"not exported: {sorted(named - exported)}"
    # Both sides are on the board: a panel over the cloud and one over the gateway at least.
    assert any(n.startswith("iotfl_gateway_") for n in named) and any(not n.startswith("iotfl_gateway_") for n in named)


def test_a_taken_metrics_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["gateway", "--id", "gw0", "--token", "t", "--cloud", f"http://127.0.0.1:{free_port()}",
                "--state-dir", str(tmp_path), "--metrics-port", str(port)]  # fmt: skip
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            result = CliRunner().invoke(app, args)
        finally:  # the command installs its stop handlers in this process
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
    assert result.exit_code == 2, result.output
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in result.output
    assert "Traceback" not in result.output
