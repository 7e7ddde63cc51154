"""``iotfl status``: the cloud's REST status as terminal tables."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table


def fetch_status(cloud: str, timeout: float = 5.0) -> dict[str, Any]:
    response = httpx.get(f"{cloud.rstrip('/')}/api/v1/status", timeout=timeout)
    response.raise_for_status()
    return response.json()


def history_table(history: list[dict[str, Any]], title: str = "Rounds") -> Table:
    table = Table(title=title)
    for name in ("round", "accuracy", "loss", "devices (k)", "samples (n)", "bytes up"):
        table.add_column(name, justify="right")
    for row in history:
        table.add_row(
            str(row["round"]),
            f"{row['accuracy'] * 100:.1f} %" if row.get("accuracy") is not None else "-",
            f"{row['loss']:.3f}" if row.get("loss") is not None else "-",
            str(row.get("k", "-")),
            str(row.get("n", "-")),
            f"{row.get('bytes_up', 0):,}",
        )
    return table


def show_status(cloud: str, as_json: bool, out: Console, err: Console) -> int:
    """Print the status; returns the process exit code (1 when the cloud cannot be reached)."""
    try:
        status = fetch_status(cloud)
    except (httpx.HTTPError, ValueError) as exc:
        err.print(f"[bold red]error:[/] cannot read {cloud}/api/v1/status: {exc}")
        return 1
    if as_json:
        out.print_json(json.dumps(status))
        return 0
    out.print(
        f"fleet [bold]{status['fleet']}[/]  round {status['round']}  model v{status['model_version']}  "
        f"state [bold]{status['state']}[/]  devices seen {status['devices_seen']}"
    )
    gateways = Table(title="Gateways")
    for name in ("id", "last seen", "rounds reported"):
        gateways.add_column(name)
    now = time.time()
    for gw in status["gateways"]:
        seen = f"{now - gw['last_seen']:.0f} s ago" if gw.get("last_seen") else "never"
        gateways.add_row(gw["id"], seen, str(gw["rounds_reported"]))
    out.print(gateways)
    out.print(history_table(status["history"]))
    return 0
