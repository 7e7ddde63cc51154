"""``iotfl cloud --workers 3`` on PostgreSQL: a real multi-process cloud whose round logic is exclusive through the
database. The same aggregate from 20 concurrent tasks counts once; distinct gateways posting concurrently through
workers close the round exactly once with the right totals. The workers' log lines (each with its pid) show that
several of them served the posts."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from flcore.messages import Agg
from flcore.model import ModelSpec

GATEWAYS = {f"gw{i}": f"secret-{i}" for i in range(10)}
WORKERS = 3
LAYERS = (10, 16, 5)  # the sensors dataset's model


@dataclass
class Workers:
    url: str
    proc: subprocess.Popen[str]
    log: list[str]
    lines: queue.Queue[str]

    def drain(self) -> list[str]:
        while not self.lines.empty():
            self.log.append(self.lines.get())
        return self.log

    def pids_that_logged(self, pattern: str) -> set[str]:
        return {m.group(1) for line in self.drain() if (m := re.search(r"\[(\d+)\] .*" + pattern, line))}

    def served_by_several(self, pattern: str, timeout: float = 5.0) -> bool:
        """Whether lines matching ``pattern`` came from two or more workers (their log lines may trail the answers)."""
        deadline = time.monotonic() + timeout
        while len(self.pids_that_logged(pattern)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.pids_that_logged(pattern)) >= 2


def _read(stream, sink: queue.Queue[str]) -> None:
    for line in stream:
        sink.put(line)


@pytest.fixture
def workers(pg_url: str) -> Iterator[Workers]:
    env = {**os.environ, "IOTFL_GATEWAY_TOKENS": ",".join(f"{gw}={t}" for gw, t in GATEWAYS.items())}
    command = [sys.executable, "-m", "iotfl", "cloud", "--workers", str(WORKERS), "--db", pg_url, "--port", "0"]
    command += ["--dataset", "sensors", "--rounds", "3", "--round-timeout", "60"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read, args=(proc.stderr, lines), daemon=True).start()
    cloud = Workers("", proc, [], lines)
    try:
        deadline = time.monotonic() + 90
        # every worker up (each logs uvicorn's startup line with its pid), and the parent's URL
        while len(cloud.pids_that_logged("Application startup complete")) < WORKERS or not cloud.url:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(cloud.drain())
            time.sleep(0.1)
            urls = [m.group(1) for line in cloud.drain() if (m := re.search(r"serving on (http://\S+) with", line))]
            cloud.url = urls[0] if urls else ""
        yield cloud
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 0, "".join(cloud.drain())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _agg(gw: str, n: int, k: int) -> Agg:
    total = np.random.default_rng(n).normal(0, 0.1, ModelSpec(LAYERS).param_count).astype(np.float32) * n
    return Agg(gw, 1, 0, n, k, total, 0.5, 100, ())


async def _post_concurrently(url: str, posts: list[Agg]) -> list[dict]:
    """Each post from its own task and connection, released together. The connections are opened one after another
    (a burst of connects would all be taken by whichever worker wakes first), so they spread over the workers."""
    start = asyncio.Event()
    clients = []
    for _ in posts:
        client = httpx.AsyncClient(base_url=url, timeout=30)
        (await client.get("/healthz")).raise_for_status()  # connected before the start signal
        clients.append(client)
        await asyncio.sleep(0.02)

    async def one(client: httpx.AsyncClient, agg: Agg) -> dict:
        headers = {"Authorization": f"Bearer {GATEWAYS[agg.gw]}", "Content-Type": "application/msgpack"}
        await start.wait()
        response = await client.post("/api/v1/rounds/1/aggregates", content=agg.encode(), headers=headers)
        response.raise_for_status()
        return response.json()

    try:
        tasks = [asyncio.create_task(one(client, agg)) for client, agg in zip(clients, posts, strict=True)]
        await asyncio.sleep(0.1)
        start.set()
        return await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.aclose()


def _checkin(url: str, *gateways: str) -> None:
    for gw in gateways:
        httpx.get(
            f"{url}/api/v1/rounds/current", headers={"Authorization": f"Bearer {GATEWAYS[gw]}"}
        ).raise_for_status()


def test_the_same_aggregate_from_20_tasks_counts_once(workers: Workers) -> None:
    _checkin(workers.url, "gw0", "gw1")  # round 1 stays open while gw1 has not reported
    answers = asyncio.run(_post_concurrently(workers.url, [_agg("gw0", n=7, k=3)] * 20))
    assert sum(a["accepted"] for a in answers) == 1 and sum(a["duplicate"] for a in answers) == 19
    assert workers.served_by_several("aggregate gw0 round 1 ")
    r1 = httpx.get(f"{workers.url}/api/v1/rounds/1").json()
    assert (r1["state"], r1["k"], r1["n"], list(r1["gateways"])) == ("open", 3, 7, ["gw0"])
    # gw1's aggregate closes the round with both counted once
    asyncio.run(_post_concurrently(workers.url, [_agg("gw1", n=5, k=2)]))
    r1 = httpx.get(f"{workers.url}/api/v1/rounds/1").json()
    assert (r1["state"], r1["k"], r1["n"]) == ("closed", 5, 12)


def test_distinct_gateways_posting_through_several_workers_close_the_round_once(workers: Workers) -> None:
    _checkin(workers.url, *GATEWAYS)
    posts = [_agg(gw, n=10 + i, k=1 + i % 3) for i, gw in enumerate(GATEWAYS)]
    answers = asyncio.run(_post_concurrently(workers.url, posts))
    assert all(a["accepted"] for a in answers)
    assert workers.served_by_several(r"aggregate gw\d round 1 .*: accepted")
    r1 = httpx.get(f"{workers.url}/api/v1/rounds/1").json()
    assert r1["state"] == "closed" and sorted(r1["gateways"]) == sorted(GATEWAYS)
    assert (r1["k"], r1["n"]) == (sum(a.k for a in posts), sum(a.n for a in posts))
    status = httpx.get(f"{workers.url}/api/v1/status").json()
    assert [h["round"] for h in status["history"]] == [1] and status["model_version"] == 1
    assert httpx.get(f"{workers.url}/api/v1/rounds/current").json()["round"] == 2
    assert len([line for line in workers.drain() if "round 1 closed" in line]) == 1
