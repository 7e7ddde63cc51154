"""Cloud throughput: 100 gateways posting their aggregates at once to a real ``iotfl cloud``, on SQLite and PostgreSQL.

For each database the cloud runs as its own process (``python -m iotfl cloud``, digits model, 100 configured
gateway tokens) on a loopback port. The anchor, in the same run and against the same process: ``GET /healthz`` from
the same 100 concurrent clients (the web stack's own cost per request). Then, for each of ``--rounds`` rounds,
every gateway checks in (``GET /api/v1/rounds/current``) and all 100 post their ``agg`` (Σ n·delta of the digits
model, 12 device ids) concurrently over one httpx ``AsyncClient`` with a connection per gateway; the last one closes
the round (FedAvg over 100 aggregates, held-out evaluation, the next round opens), which the script checks.

Reported per database: aggregates/s (all posts of a round / the round's wall time, median over rounds), p50/p99
latency of a post, rounds closed, and aggregates/s as a fraction of the anchor's requests/s. PostgreSQL is the
server at 127.0.0.1:5432 (database ``test``, a throwaway schema); when it is not reachable its row is skipped with
the reason.

    python benchmarks/cloud.py                      # 100 gateways, 10 rounds, SQLite and PostgreSQL
    python benchmarks/cloud.py --quick              # smoke run: 10 gateways, 2 rounds
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from flcore.messages import Agg
from flcore.model import ModelSpec

DIGITS_LAYERS = (64, 32, 10)  # the model `--dataset digits` serves
DEVICES_PER_GATEWAY = 12
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "cloud.json"
START_SECONDS = 60.0
CLOSE_SECONDS = 30.0
HTTP_SECONDS = 60.0
RETRIES = 3
ANCHOR_PER_CLIENT = 10  # GET /healthz requests per client for the anchor


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p))


@dataclass
class Result:
    """One database's figures."""

    db: str
    skipped: str | None = None
    anchor_rps: float = 0.0
    anchor_p50_ms: float = 0.0
    round_rates: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    accepted: int = 0
    retries: list[int] = field(default_factory=list)
    rounds_closed: int = 0
    close_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.round_rates) if self.round_rates else 0.0

    def to_json(self) -> dict[str, Any]:
        if self.skipped:
            return {"db": self.db, "skipped": self.skipped}
        return {
            "db": self.db,
            "aggregates_per_s": round(self.rate, 1),
            "aggregates_per_s_by_round": [round(x, 1) for x in self.round_rates],
            "p50_ms": round(percentile(self.latencies_ms, 50), 2),
            "p99_ms": round(percentile(self.latencies_ms, 99), 2),
            "accepted": self.accepted,
            "retried_requests": len(self.retries),
            "rounds_closed": self.rounds_closed,
            "anchor_healthz_per_s": round(self.anchor_rps, 1),
            "anchor_p50_ms": round(self.anchor_p50_ms, 2),
            "ratio_to_anchor": round(self.rate / self.anchor_rps, 4) if self.anchor_rps else None,
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_problem() -> str | None:
    """None when PostgreSQL at 127.0.0.1:5432 takes connections, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=2):
            return None
    except Exception as exc:  # any failure means: no usable server here
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh database URL: a SQLite file, or a throwaway PostgreSQL schema dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'cloud.db'}"
        return
    import psycopg

    schema = f"iotfl_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def cloud_process(db_url: str, tokens: dict[str, str], rounds: int, workdir: Path) -> Iterator[str]:
    """``iotfl cloud`` in its own process on a free loopback port until the block ends; yields its URL."""
    port = free_port()
    env = {
        **os.environ,
        "IOTFL_GATEWAY_TOKENS": ",".join(f"{gw}={token}" for gw, token in tokens.items()),
    }
    command = [sys.executable, "-m", "iotfl", "cloud", "--host", "127.0.0.1", "--port", str(port), "--db", db_url]
    command += ["--dataset", "digits", "--rounds", str(rounds), "--round-timeout", "300"]
    command += ["--min-gateways", str(len(tokens))]
    log = (workdir / "cloud.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the cloud exited with code {proc.returncode}: see {workdir / 'cloud.log'}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cloud did not answer within {START_SECONDS:.0f} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


async def timed(
    client: httpx.AsyncClient, method: str, path: str, retries: list[int] | None = None, **kw: Any
) -> tuple[httpx.Response, float]:
    """The response and its latency in ms; a dropped connection is retried (as a gateway does), counted in
    ``retries``: uvicorn closes a keep-alive connection idle for 5 s, which a slow round on a loaded machine hits."""
    start = time.perf_counter()
    for attempt in range(RETRIES + 1):
        try:
            response = await client.request(method, path, **kw)
            break
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
            if attempt == RETRIES or retries is None:
                raise
            retries.append(1)
    return response, (time.perf_counter() - start) * 1000


async def anchor(client: httpx.AsyncClient, clients: int) -> tuple[float, float]:
    """Requests/s and p50 ms of ``GET /healthz`` from ``clients`` concurrent clients, ANCHOR_PER_CLIENT each."""

    retries: list[int] = []

    async def one_client() -> list[float]:
        out = []
        for _ in range(ANCHOR_PER_CLIENT):
            response, ms = await timed(client, "GET", "/healthz", retries)
            response.raise_for_status()
            out.append(ms)
        return out

    start = time.perf_counter()
    latencies = [ms for part in await asyncio.gather(*(one_client() for _ in range(clients))) for ms in part]
    return len(latencies) / (time.perf_counter() - start), percentile(latencies, 50)


def bodies(spec: ModelSpec, gateways: list[str], rnd: int, rng: np.random.Generator) -> dict[str, bytes]:
    """Each gateway's ``agg`` for round ``rnd``: a plausible Σ n·delta over its devices."""
    out = {}
    for i, gw in enumerate(gateways):
        n = int(rng.integers(100, 2000))
        total = (rng.normal(0.0, 0.01, spec.param_count) * n).astype(np.float32)
        devices = tuple(f"d{i:03d}x{j:02d}" for j in range(DEVICES_PER_GATEWAY))
        out[gw] = Agg(gw, rnd, rnd - 1, n, len(devices), total, 0.8, 2600 * len(devices), devices).encode()
    return out


async def run_rounds(url: str, tokens: dict[str, str], rounds: int, result: Result, console: Console) -> None:
    spec = ModelSpec(DIGITS_LAYERS)
    rng = np.random.default_rng(0)
    gateways = list(tokens)
    auth = {gw: {"Authorization": f"Bearer {tokens[gw]}"} for gw in gateways}
    limits = httpx.Limits(max_connections=len(gateways), max_keepalive_connections=len(gateways))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=HTTP_SECONDS) as client:
        result.anchor_rps, result.anchor_p50_ms = await anchor(client, len(gateways))
        for rnd in range(1, rounds + 1):
            posts = bodies(spec, gateways, rnd, rng)
            checkins = await asyncio.gather(
                *(timed(client, "GET", "/api/v1/rounds/current", result.retries, headers=auth[gw]) for gw in gateways)
            )
            current = checkins[0][0].json()
            if current["round"] != rnd or current["state"] != "open":
                raise RuntimeError(f"expected round {rnd} open, the cloud says {current}")
            headers = {gw: {**auth[gw], "Content-Type": "application/msgpack"} for gw in gateways}
            start = time.perf_counter()
            answers = await asyncio.gather(
                *(
                    timed(
                        client,
                        "POST",
                        f"/api/v1/rounds/{rnd}/aggregates",
                        result.retries,
                        content=posts[gw],
                        headers=headers[gw],
                    )
                    for gw in gateways
                )
            )
            elapsed = time.perf_counter() - start
            for response, ms in answers:
                # a retried post whose first attempt was stored is answered as a duplicate (idempotent per gw, round)
                if response.status_code != 200 or not (
                    response.json().get("accepted") or response.json().get("duplicate")
                ):
                    raise RuntimeError(f"round {rnd}: {response.status_code} {response.text}")
                result.latencies_ms.append(ms)
            result.accepted += len(answers)
            result.round_rates.append(len(answers) / elapsed)
            result.close_ms.append(max(ms for _r, ms in answers))
            deadline = time.monotonic() + CLOSE_SECONDS
            while (info := (await timed(client, "GET", f"/api/v1/rounds/{rnd}", result.retries))[0].json())[
                "state"
            ] != "closed":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"round {rnd} did not close within {CLOSE_SECONDS:.0f} s: {info}")
                await asyncio.sleep(0.05)
            result.rounds_closed += 1
            console.log(f"{result.db}: round {rnd} closed, {len(answers) / elapsed:,.0f} aggregates/s")


def bench(kind: str, gateways: int, rounds: int, console: Console) -> Result:
    if kind == "postgresql" and (problem := postgres_problem()) is not None:
        console.print(f"[yellow]PostgreSQL skipped: 127.0.0.1:5432 (database test) is not reachable: {problem}")
        return Result(kind, skipped=problem)
    tokens = {f"gw{i:03d}": f"bench-token-{i:03d}-{uuid.uuid4().hex[:8]}" for i in range(gateways)}
    result = Result(kind)
    with tempfile.TemporaryDirectory(prefix="iotfl-cloud-bench-") as tmp:
        workdir = Path(tmp)
        try:
            with database(kind, workdir) as url, cloud_process(url, tokens, rounds, workdir) as base:
                asyncio.run(run_rounds(base, tokens, rounds, result, console))
        except Exception:
            lines = (workdir / "cloud.log").read_text(errors="replace").splitlines()
            console.print(f"[red]{kind} failed; the cloud's log ends with:[/red]\n" + "\n".join(lines[-30:]))
            raise
    return result


def table(results: list[Result], gateways: int) -> Table:
    t = Table(title=f"Cloud: {gateways} gateways posting aggregates concurrently (digits model, loopback)")
    for name in ("database", "aggregates/s", "p50 ms", "p99 ms", "rounds closed", "healthz req/s", "× anchor"):
        t.add_column(name, justify="left" if name == "database" else "right")
    for r in results:
        if r.skipped:
            t.add_row(r.db, f"skipped: {r.skipped}", "", "", "", "", "")
            continue
        t.add_row(
            r.db,
            f"{r.rate:,.0f}",
            f"{percentile(r.latencies_ms, 50):.1f}",
            f"{percentile(r.latencies_ms, 99):.1f}",
            str(r.rounds_closed),
            f"{r.anchor_rps:,.0f}",
            f"{r.rate / r.anchor_rps:.2f}",
        )
    t.caption = "aggregates/s: median over rounds of (posts of a round / its wall time); anchor: GET /healthz"
    return t


def main(
    gateways: Annotated[int, typer.Option(min=1, max=999, help="configured gateways, all posting each round")] = 100,
    rounds: Annotated[int, typer.Option(min=1, help="rounds to run on each database")] = 10,
    db: Annotated[str, typer.Option(help="comma-separated: sqlite, postgresql")] = "sqlite,postgresql",
    quick: Annotated[bool, typer.Option(help="smoke run: 10 gateways, 2 rounds")] = False,
    json_path: Annotated[Path, typer.Option("--json", help="where to write the JSON report")] = DEFAULT_JSON,
) -> None:
    """Throughput and latency of the cloud under concurrent gateway aggregates, on SQLite and PostgreSQL."""
    if quick:
        gateways, rounds = 10, 2
    kinds = [k.strip() for k in db.split(",") if k.strip()]
    unknown = set(kinds) - {"sqlite", "postgresql"}
    if unknown:
        raise typer.BadParameter(f"unknown database(s) {', '.join(sorted(unknown))}")
    console = Console() if sys.stdout.isatty() else Console(width=160)
    load_before = os.getloadavg()
    results = [bench(kind, gateways, rounds, console) for kind in kinds]
    load_after = os.getloadavg()
    console.print(table(results, gateways))
    console.print(f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} cpus")
    report = {
        "config": {"gateways": gateways, "rounds": rounds, "devices_per_gateway": DEVICES_PER_GATEWAY},
        "results": [r.to_json() for r in results],
        "load_average": {"before": list(load_before), "after": list(load_after)},
        "cpus": os.cpu_count(),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {json_path}")


if __name__ == "__main__":
    typer.run(main)
