"""Gateway ingest rate against the broker's own delivery rate, measured in the same run.

A fresh mosquitto (generated config, ``iotfl.broker``) per measurement. ``--messages`` (20,000) pre-encoded, valid
``up`` messages of the digits model (layers 64-32-10, P = 2,442, chunk 256: ~2.5 KB each), one per device
(``b00000`` …), all for round 1 / sub 0 / base 0, so a gateway with one open sub-round accepts every one of them.
A separate publisher process (a minimal raw-socket MQTT client with every PUBLISH packet encoded beforehand, QoS 1)
sends them as fast as the broker takes them.

- (a) anchor: ``mosquitto_sub -q 1 -C N`` on the gateway's ``up`` wildcard; rate = messages / (time of the N-th −
  time of the first, mosquitto_sub's own ``%U`` timestamps).
- (b) ours: a real ``GatewayNode`` with its SQLite journal (WAL, ``synchronous=FULL``) and ``quorum`` = N; rate =
  messages / (from the first ``up`` the gateway receives to the N-th PUBACK it sends, every update accepted,
  journaled, folded and its ``accepted`` ack published).

Phases alternate (a, b, a, b, …) ``--repeats`` times; the table shows each phase's median and the ratio of the
medians (target (b)/(a) ≥ 0.8).

    python benchmarks/ingest.py                    # 20,000 messages, 3 repetitions (~1-2 min)
    python benchmarks/ingest.py --quick            # smoke run: 500 messages, 1 repetition
    python benchmarks/ingest.py --messages 50000 --repeats 5 --json /tmp/ingest.json
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import msgpack
import numpy as np
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a fresh clone
    sys.path.insert(0, str(ROOT))

from flcore.endpoints import parse_broker_url  # noqa: E402
from flcore.messages import Task, Up  # noqa: E402
from flcore.model import ModelSpec  # noqa: E402
from flcore.quantize import quantize  # noqa: E402
from flcore.topics import GatewayTopics  # noqa: E402
from gateway import mqtt_packets  # noqa: E402
from gateway.journal import Journal  # noqa: E402
from gateway.mqtt_reader import Handled  # noqa: E402
from gateway.node import GatewayNode  # noqa: E402
from iotfl.broker import Broker, start_broker  # noqa: E402

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "ingest.json"
LAYERS = (64, 32, 10)  # the digits model (iotfl demo --dataset digits)
CHUNK = 256
FLEET, GW = "bench", "gw0"
TOPICS = GatewayTopics(FLEET, GW)
PROBE = f"iotfl/{FLEET}/probe"
QUICK_MESSAGES = 500
TARGET = 0.8
PUBLISH_WINDOW = 10_000
# Every wait is bounded: a phase that has not finished by then counts as failed.
PHASE_TIMEOUT = 300.0
START_TIMEOUT = 15.0


@dataclass
class Phase:
    """One measurement: which consumer, how many messages it got, over how many seconds."""

    consumer: str
    messages: int
    seconds: float
    publisher_rate: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------------------------------------- messages


def make_messages(count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` valid ``up`` messages for round 1 / sub 0 / base 0, each from its own device."""
    spec = ModelSpec(LAYERS)
    rng = np.random.default_rng(seed)
    # A handful of distinct deltas (quantizing 20,000 would dominate the setup); every payload still differs in dev.
    deltas = [quantize(rng.normal(0, 0.05, spec.param_count).astype(np.float32), CHUNK) for _ in range(16)]
    messages = []
    for i in range(count):
        scales, q = deltas[i % len(deltas)]
        dev = f"b{i:05d}"
        up = Up(dev, 1, 0, 10 + i % 90, 0.5, i, CHUNK, scales, q, meta={"battery": 0.8, "train_ms": 120})
        messages.append((TOPICS.up(dev), up.encode()))
    return messages


def bench_task(deadline_in: float) -> Task:
    spec = ModelSpec(LAYERS)
    return Task(1, 0, spec.layers, spec.init(0), 0.1, 1, 16, CHUNK, time.time() + deadline_in, 0.0)


# -------------------------------------------------------------------------------------------------------- publisher


def publish_packets(messages: list[tuple[str, bytes]]) -> list[bytes]:
    """MQTT 3.1.1 PUBLISH packets at QoS 1, packet ids 1, 2, … (wrapping below 65,536)."""
    return [
        mqtt_packets.publish(topic.encode(), payload, i % 0xFFFF + 1) for i, (topic, payload) in enumerate(messages)
    ]


def publish_all(port: int, path: Path) -> None:
    """The publisher process: every (topic, payload) in ``path`` at QoS 1, then the rate the broker took them at.

    A minimal MQTT client over a raw socket with every PUBLISH packet encoded beforehand, so the publisher spends
    next to no CPU and the broker sets the pace; it keeps at most ``PUBLISH_WINDOW`` messages un-PUBACKed (packet
    ids stay unique among those in flight).
    """
    packets = publish_packets(msgpack.unpackb(path.read_bytes(), use_list=False))
    sock = socket.create_connection(("127.0.0.1", port), timeout=PHASE_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(mqtt_packets.connect(f"bench-pub-{os.getpid()}", 60, clean=True, username=None, password=None))
    if sock.recv(4) != b"\x20\x02\x00\x00":
        raise RuntimeError("the broker refused the publisher's connection")
    acked = threading.Semaphore(PUBLISH_WINDOW)
    done = threading.Event()

    def read_pubacks() -> None:
        # Only PUBACKs (4 bytes each) come back on this connection.
        left = 4 * len(packets)
        while left > 0:
            chunk = sock.recv(min(left, 1 << 16))
            if not chunk:
                return
            left -= len(chunk)
            for _ in range(len(chunk) // 4):
                acked.release()
        done.set()

    reader = threading.Thread(target=read_pubacks, daemon=True)
    start = time.perf_counter()
    reader.start()
    for packet in packets:
        acked.acquire()
        sock.sendall(packet)
    finished = done.wait(PHASE_TIMEOUT)
    seconds = time.perf_counter() - start
    sock.sendall(mqtt_packets.DISCONNECT)
    sock.close()
    print(json.dumps({"published": len(packets), "seconds": seconds, "complete": finished}), flush=True)


@contextmanager
def publisher(port: int, path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--publish", str(path), "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def publisher_rate(proc: subprocess.Popen[str]) -> float:
    """Messages per second the publisher got PUBACKs for (0 when it did not finish)."""
    out, _ = proc.communicate(timeout=PHASE_TIMEOUT)
    report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    if not report.get("complete"):
        return 0.0
    return float(report["published"]) / float(report["seconds"])


# ----------------------------------------------------------------------------------------------------------- phases


def anchor_phase(broker: Broker, path: Path, count: int) -> Phase:
    """(a) ``mosquitto_sub -q 1 -C count`` on the gateway's ``up`` wildcard."""
    exe = shutil.which("mosquitto_sub")
    if exe is None:
        raise RuntimeError("mosquitto_sub is not installed (apt-get install mosquitto-clients)")
    # A retained probe on a second subscribed topic arrives first: it shows the subscription is active.
    subprocess.run(
        [exe.replace("_sub", "_pub"), "-p", str(broker.port), "-q", "1", "-r", "-t", PROBE, "-m", "ready"], check=True
    )
    cmd = [exe, "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", TOPICS.up_wildcard, "-t", PROBE]
    sub = subprocess.Popen([*cmd, "-C", str(count + 1), "-F", "%t %U"], stdout=subprocess.PIPE, text=True)
    try:
        assert sub.stdout is not None
        first = sub.stdout.readline()
        if not first.startswith(PROBE):
            raise RuntimeError(f"mosquitto_sub did not subscribe: {first!r}")
        with publisher(broker.port, path) as pub:
            out, _ = sub.communicate(timeout=PHASE_TIMEOUT)
            pub_rate = publisher_rate(pub)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(10)
    stamps = [float(line.split()[1]) for line in out.splitlines() if line.startswith(TOPICS.prefix)]
    if len(stamps) != count:
        raise RuntimeError(f"mosquitto_sub got {len(stamps)} of {count} messages")
    return Phase("mosquitto_sub", count, stamps[-1] - stamps[0], pub_rate)


def gateway_phase(broker: Broker, path: Path, count: int, state_dir: Path) -> Phase:
    """(b) a real ``GatewayNode`` with its journal: first ``up`` received → N-th PUBACK sent, all accepted."""
    journal = Journal(state_dir, GW)
    journal.begin(1, 0)
    node = GatewayNode(GW, parse_broker_url(broker.url), fleet=FLEET, quorum=count, journal=journal)
    node.open_sub_round(bench_task(PHASE_TIMEOUT))
    first = threading.Event()
    handler = node.ups.handler

    def timed(batch: list[tuple[str, bytes]]) -> Handled:
        first.set()  # the clock starts when the first batch of updates reaches the gateway's code
        return handler(batch)

    node.ups.handler = timed
    try:
        if not node.start(START_TIMEOUT):
            raise RuntimeError("the gateway did not subscribe")
        link = node.ups
        with publisher(broker.port, path) as pub:
            deadline = time.monotonic() + PHASE_TIMEOUT
            first.wait(PHASE_TIMEOUT)
            start = time.perf_counter()
            while link.pubacked < count and time.monotonic() < deadline:
                time.sleep(0.001)
            seconds = time.perf_counter() - start
            pub_rate = publisher_rate(pub)
        counters = node.counters
        if counters["accepted"] != count or link.pubacked < count:
            raise RuntimeError(f"the gateway accepted {counters['accepted']} and PUBACKed {link.pubacked} of {count}")
    finally:
        node.stop()
        journal.close()
    return Phase("gateway", count, seconds, pub_rate)


def run_phases(count: int, repeats: int, workdir: Path, console: Console) -> list[Phase]:
    messages = make_messages(count)
    path = workdir / "messages.msgpack"
    path.write_bytes(msgpack.packb(messages, use_bin_type=True))
    phases: list[Phase] = []
    for rep in range(repeats):
        for consumer in ("mosquitto_sub", "gateway"):
            broker = start_broker(prefer="mosquitto", workdir=workdir / f"broker-{rep}-{consumer}")
            try:
                if consumer == "mosquitto_sub":
                    phase = anchor_phase(broker, path, count)
                else:
                    phase = gateway_phase(broker, path, count, workdir / f"state-{rep}")
            finally:
                broker.stop()
            console.log(f"repetition {rep + 1}/{repeats}: {consumer} {phase.rate:,.0f} msg/s")
            phases.append(phase)
    return phases


# ------------------------------------------------------------------------------------------------------------ report


def summarize(phases: list[Phase], count: int, payload_bytes: float) -> dict:
    def median(consumer: str, attr: str) -> float:
        return statistics.median(getattr(p, attr) for p in phases if p.consumer == consumer)

    anchor, ours = median("mosquitto_sub", "rate"), median("gateway", "rate")
    return {
        "config": {"messages": count, "layers": list(LAYERS), "chunk": CHUNK, "payload_bytes": payload_bytes},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg": list(os.getloadavg())},
        "anchor_rate": anchor,
        "gateway_rate": ours,
        "ratio": ours / anchor if anchor else 0.0,
        "target": TARGET,
        "publisher_rate": statistics.median(p.publisher_rate for p in phases),
        "phases": [asdict(p) | {"rate": p.rate} for p in phases],
    }


def show(report: dict, console: Console) -> None:
    config = report["config"]
    table = Table(title=f"Gateway ingest, {config['messages']:,} up messages of ~{config['payload_bytes']:,.0f} B")
    table.add_column("consumer")
    table.add_column("msg/s (median)", justify="right")
    table.add_column("each repetition", justify="right")
    table.add_column("vs anchor", justify="right")
    for consumer, label, rate in (
        ("mosquitto_sub", "(a) mosquitto_sub -q 1", report["anchor_rate"]),
        ("gateway", "(b) GatewayNode + journal + acks", report["gateway_rate"]),
    ):
        reps = ", ".join(f"{p['rate']:,.0f}" for p in report["phases"] if p["consumer"] == consumer)
        table.add_row(label, f"{rate:,.0f}", reps, f"{rate / report['anchor_rate']:.2f}×")
    console.print(table)
    verdict = "met" if report["ratio"] >= TARGET else "NOT met"
    console.print(
        f"(b)/(a) = {report['ratio']:.2f} (target ≥ {TARGET}: {verdict}); publisher sent at "
        f"{report['publisher_rate']:,.0f} msg/s; load average {report['machine']['loadavg'][0]:.2f} "
        f"on {report['machine']['cpus']} CPUs"
    )


def main(
    messages: Annotated[int, typer.Option(min=2, help="up messages per phase")] = 20_000,
    repeats: Annotated[int, typer.Option(min=1, help="repetitions of the (a, b) pair; medians are reported")] = 3,
    quick: Annotated[bool, typer.Option(help=f"smoke run: {QUICK_MESSAGES} messages, 1 repetition")] = False,
    json_path: Annotated[Path, typer.Option("--json", help="where to write the JSON report")] = DEFAULT_JSON,
    publish: Annotated[Path | None, typer.Option(hidden=True)] = None,
    port: Annotated[int, typer.Option(hidden=True)] = 0,
) -> None:
    """Gateway ingest (validate + dedup + accumulate + journal + ack) vs mosquitto_sub on the same stream."""
    if publish is not None:
        publish_all(port, publish)
        return
    if quick:
        messages, repeats = QUICK_MESSAGES, 1
    console = Console()
    with tempfile.TemporaryDirectory(prefix="iotfl-ingest-") as tmp:
        phases = run_phases(messages, repeats, Path(tmp), console)
    payload = statistics.mean(len(p) for _, p in make_messages(16))
    report = summarize(phases, messages, payload)
    show(report, console)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"wrote {json_path}")


if __name__ == "__main__":
    typer.run(main)
