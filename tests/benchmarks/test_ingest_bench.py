"""Smoke test of benchmarks/ingest.py: a --quick run measures both consumers on the same stream, prints its table and
writes a JSON report of the documented shape (no speed target is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.ingest import QUICK_MESSAGES, TOPICS, make_messages, publish_packets
from flcore.messages import Up
from gateway.collector import Collector
from gateway.verdicts import SubRound

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ingest.py"


def test_quick_run_reports_both_consumers(tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)], capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Gateway ingest" in run.stdout and "mosquitto_sub" in run.stdout
    report = json.loads(out.read_text())
    assert report["config"]["messages"] == QUICK_MESSAGES and report["target"] == 0.8
    assert [p["consumer"] for p in report["phases"]] == ["mosquitto_sub", "gateway"]
    assert all(p["messages"] == QUICK_MESSAGES and p["seconds"] > 0 for p in report["phases"])
    assert report["anchor_rate"] > 0 and report["gateway_rate"] > 0 and report["publisher_rate"] > 0
    assert abs(report["ratio"] - report["gateway_rate"] / report["anchor_rate"]) < 1e-9
    assert len(report["machine"]["loadavg"]) == 3


def test_messages_are_valid_distinct_updates_a_gateway_accepts_in_one_round() -> None:
    messages = make_messages(40)
    assert len({topic for topic, _ in messages}) == 40
    assert 2_000 < len(messages[0][1]) < 3_000  # ~2.5 KB: the digits model's int8 update
    first = Up.decode(messages[0][1])
    collector = Collector(TOPICS)
    collector.open(SubRound(first.round, first.sub, first.base, first.q.size))
    verdicts = collector.ingest_batch(messages)
    assert [v.ack.status for v in verdicts if v] == ["accepted"] * 40


def test_publish_packets_are_mqtt_publish_at_qos1() -> None:
    (topic, payload), *_ = make_messages(1)
    (packet,) = publish_packets([(topic, payload)])
    assert packet[0] == 0x32  # PUBLISH, QoS 1
    assert packet.endswith(payload) and topic.encode() in packet[:80]
