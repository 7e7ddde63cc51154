"""``iotfl status``: the cloud's REST status as terminal tables (``--json``: the same data for scripts).

It reads ``/api/v1/status``, and ``/api/v1/gateways`` and ``/api/v1/devices`` (what gateways report) when the cloud
serves them; a cloud without them still gets its status shown.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

DEVICE_STATES = ("online", "sleeping", "offline")


class Unreachable(Exception):
    """The cloud did not answer, or not with its status."""


def _get(client: httpx.Client, path: str, optional: bool = False, **params: Any) -> Any:
    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot read {client.base_url}{path}: {type(exc).__name__}: {exc}") from None
    if optional and response.status_code == 404:
        return None
    if response.status_code != 200:
        raise Unreachable(f"cannot read {client.base_url}{path}: HTTP {response.status_code} {response.text[:200]}")
    try:
        return response.json()
    except ValueError:
        raise Unreachable(
            f"{client.base_url}{path} did not answer JSON (is {client.base_url} an iotfl cloud?)"
        ) from None


def fetch_status(cloud: str, timeout: float = 5.0) -> dict[str, Any]:
    """``/api/v1/status``, plus ``overview`` (``/api/v1/gateways``) and ``device_states`` (devices by state) when
    the cloud serves them (else null)."""
    with httpx.Client(base_url=cloud.rstrip("/"), timeout=timeout) as client:
        status = _get(client, "/api/v1/status")
        if not isinstance(status, dict) or "history" not in status:
            raise Unreachable(f"cannot read {cloud}/api/v1/status: not an iotfl status")
        status["overview"] = _get(client, "/api/v1/gateways", optional=True)
        states: dict[str, int] | None = None
        if status["overview"] is not None:
            states = {s: _get(client, "/api/v1/devices", state=s, limit=1)["total"] for s in DEVICE_STATES}
        status["device_states"] = states
    return status


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


def _ago(t: float | None, now: float) -> str:
    return "never" if t is None else f"{max(0.0, now - t):.0f} s ago"


def gateways_table(status: dict[str, Any], now: float) -> Table:
    """One row per gateway: check-in, and with the cloud's overview its devices, bytes and round progress."""
    overview = status.get("overview")
    table = Table(title="Gateways")
    if overview is None:
        for name in ("id", "last seen", "rounds reported"):
            table.add_column(name)
        for gw in status["gateways"]:
            table.add_row(gw["id"], _ago(gw.get("last_seen"), now), str(gw["rounds_reported"]))
        return table
    for name in ("id", "last seen", "devices online / known", "bytes up", "rounds reported"):
        table.add_column(name, justify="left" if name == "id" else "right")
    table.add_column(f"round {overview['round']}: accepted · devices / live", justify="right")
    table.add_column("aggregate")
    for gw in overview["gateways"]:
        p = gw.get("progress")
        current = p is not None and p["round"] == overview["round"]
        table.add_row(
            gw["id"],
            _ago(gw.get("last_seen"), now),
            f"{gw['devices_online']} / {gw['devices_known']}",
            f"{gw['bytes_up']:,}",
            str(gw["rounds_reported"]),
            f"{p['accepted']} · {p['devices']} / {p['live']}" if current else "-",
            "[green]posted[/]" if gw["posted"] else "collecting",
        )
    return table


def rejected_table(overview: dict[str, Any]) -> Table:
    table = Table(title="Rejected updates")
    table.add_column("reason")
    table.add_column("updates", justify="right")
    table.add_column("by gateway")
    for reason, count in overview["rejected"].items():
        by_gw = ", ".join(
            f"{g['id']}: {g['rejected'][reason]}" for g in overview["gateways"] if reason in g["rejected"]
        )
        table.add_row(reason, f"{count:,}", by_gw)
    return table


def show_status(cloud: str, as_json: bool, out: Console, err: Console) -> int:
    """Print the status; returns the process exit code (1 when the cloud cannot be read)."""
    try:
        status = fetch_status(cloud)
    except Unreachable as exc:
        err.print(f"[bold red]error:[/] {exc}")
        return 1
    if as_json:
        out.print_json(json.dumps(status))
        return 0
    states = status["device_states"]
    by_state = f"  device statuses: {', '.join(f'{n} {s}' for s, n in states.items())}" if states else ""
    # An older cloud does not name its server optimizer.
    opt = f"  server {status['server_opt']} (lr {status['server_lr']:g})" if "server_opt" in status else ""
    out.print(
        f"fleet [bold]{status['fleet']}[/]  round {status['round']}/{status['total_rounds']}  "
        f"model v{status['model_version']}  state [bold]{status['state']}[/]  "
        f"devices seen {status['devices_seen']}{by_state}{opt}"
    )
    out.print(gateways_table(status, time.time()))
    if status["overview"] is not None and status["overview"]["rejected"]:
        out.print(rejected_table(status["overview"]))
    out.print(history_table(status["history"]))
    return 0
