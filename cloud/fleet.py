"""What the gateways report about their fleet (docs/protocol.md "Gateway reports"), and the dashboard's read queries.

Gateways forward the retained ``status`` of their devices (battery, RSSI, RAM class, state) and the progress of the
round they collect, with their update counters, in ``POST /api/v1/gateways/{gw}/report``. Only the latest value is
kept: a report is a live view, and a lost one is made good by the next (gateways resend every status now and then).
The tables are the cloud's (migration 0003) but nothing here changes a round.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import JSON, BigInteger, Double, Integer, SmallInteger, String, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from cloud import storage as db
from cloud.views import (
    DeviceInfo,
    DevicePage,
    DeviceStatus,
    FleetOverview,
    GatewayDetail,
    GatewayProgress,
    GatewayReport,
)

# Rows looked up per IN (...) query: well under every engine's bound-parameter limit.
_CHUNK = 500
# Tries of a report whose rows another worker inserted concurrently.
_ATTEMPTS = 3
# Gateway counters that are not refused updates (the collector counts acks by status, rejections by reason, and
# `stale`/`parked` for updates it took with a staleness weight or held for a later sub-round).
NOT_REJECTED = frozenset({"accepted", "duplicate", "stale", "parked"})


class DeviceStatusRow(db.Base):
    """A device's latest retained status as its gateway received it (``updated_at``: the gateway's clock)."""

    __tablename__ = "iotfl_device_status"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    gw: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    battery: Mapped[float | None] = mapped_column(Double, nullable=True)
    rssi: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    ram_class: Mapped[str | None] = mapped_column(String(32), nullable=True)
    fw: Mapped[str | None] = mapped_column(String(64), nullable=True)
    updated_at: Mapped[float] = mapped_column(Double)


class GatewayReportRow(db.Base):
    """A gateway's latest report: the round it collects, its progress and its update counters since it started."""

    __tablename__ = "iotfl_gateway_reports"
    gw: Mapped[str] = mapped_column(String(64), primary_key=True)
    reported_at: Mapped[float] = mapped_column(Double)
    round: Mapped[int] = mapped_column(Integer)
    accepted: Mapped[int] = mapped_column(Integer)
    devices: Mapped[int] = mapped_column(Integer)
    live: Mapped[int] = mapped_column(Integer)
    bytes_up: Mapped[int] = mapped_column(BigInteger)
    counters: Mapped[dict[str, int]] = mapped_column(JSON)


class Fleet:
    """Reads and writes the reports through the round service's ``Storage`` (its engine and transactions)."""

    def __init__(self, storage: db.Storage):
        self.storage = storage

    def record(self, gw: str, report: GatewayReport, now: float | None = None) -> int:
        """Store ``gw``'s report; returns how many device statuses it updated."""
        now = time.time() if now is None else now
        latest = {d.dev: d for d in report.devices}  # a device named twice: its last entry wins
        attempt = 1
        while True:
            try:
                with self.storage.transaction(write=True) as s:
                    _store(s, gw, report, latest, now)
                return len(latest)
            except IntegrityError:
                # Another worker inserted one of these rows first (PostgreSQL): the next attempt updates it.
                if attempt == _ATTEMPTS:
                    raise
                attempt += 1

    def devices(self, offset: int, limit: int, gw: str | None = None, state: str | None = None) -> DevicePage:
        """One page of device statuses ordered by id, optionally of one gateway and/or in one state."""
        query = select(DeviceStatusRow)
        if gw is not None:
            query = query.where(DeviceStatusRow.gw == gw)
        if state is not None:
            query = query.where(DeviceStatusRow.state == state)
        with self.storage.transaction() as s:
            total = int(s.scalar(select(func.count()).select_from(query.subquery())) or 0)
            rows = s.scalars(query.order_by(DeviceStatusRow.id).offset(offset).limit(limit))
            items = [_device(r) for r in rows]
        return DevicePage(total=total, offset=offset, limit=limit, items=items)

    def overview(self) -> FleetOverview:
        """Per gateway: check-in, devices, bytes, this round's progress and rejections; the rejections' totals."""
        with self.storage.transaction() as s:
            current = db.current_round(s)
            r = current.round if current is not None else 0
            reported = db.rounds_reported(s)
            posted, _carried = db.round_reports(s, r)
            by_gw = select(db.AggregateRow.gw, func.sum(db.AggregateRow.bytes_up)).group_by(db.AggregateRow.gw)
            bytes_by_gw = {gw: int(total or 0) for gw, total in s.execute(by_gw)}
            by_state = select(DeviceStatusRow.gw, DeviceStatusRow.state, func.count())
            counts = _device_counts(
                [
                    (gw, state, int(n))
                    for gw, state, n in s.execute(by_state.group_by(DeviceStatusRow.gw, DeviceStatusRow.state))
                ]
            )
            reports = {row.gw: row for row in s.scalars(select(GatewayReportRow))}
            gateways = db.gateways(s)
        details, rejected_total = [], dict[str, int]()
        for g in gateways:
            report = reports.get(g.id)
            rejected = _rejected(report.counters if report is not None else {})
            for reason, count in rejected.items():
                rejected_total[reason] = rejected_total.get(reason, 0) + count
            online, known = counts.get(g.id, (0, 0))
            details.append(
                GatewayDetail(
                    id=g.id,
                    last_seen=g.last_seen,
                    rounds_reported=reported.get(g.id, 0),
                    devices_online=online,
                    devices_known=known,
                    bytes_up=bytes_by_gw.get(g.id, 0),
                    posted=g.id in posted,
                    progress=_progress(report),
                    rejected=rejected,
                )
            )
        return FleetOverview(round=r, gateways=details, rejected=dict(sorted(rejected_total.items())))


def _store(s: Session, gw: str, report: GatewayReport, latest: dict[str, DeviceStatus], now: float) -> None:
    row = s.get(GatewayReportRow, gw) or GatewayReportRow(gw=gw)
    s.add(row)
    row.reported_at, row.round, row.counters, row.accepted = now, report.round, dict(report.counters), report.accepted
    row.devices, row.live, row.bytes_up = report.devices_in_round, report.live, report.bytes_up
    ids = sorted(latest)  # rows locked in one order by every writer: no deadlock between two reports
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        known = {r.id: r for r in s.scalars(select(DeviceStatusRow).where(DeviceStatusRow.id.in_(chunk)))}
        for dev in chunk:
            d, target = latest[dev], known.get(dev) or DeviceStatusRow(id=dev)
            s.add(target)
            target.gw, target.state, target.battery, target.rssi = gw, d.state, d.battery, d.rssi
            target.ram_class, target.fw, target.updated_at = d.ram_class, d.fw, d.updated_at


def _device(row: DeviceStatusRow) -> DeviceInfo:
    return DeviceInfo(
        dev=row.id,
        gw=row.gw,
        state=row.state,  # type: ignore[arg-type]  # only DEVICE_STATES are stored (the report is validated)
        battery=row.battery,
        rssi=row.rssi,
        ram_class=row.ram_class,
        fw=row.fw,
        updated_at=row.updated_at,
    )


def _device_counts(rows: Sequence[tuple[str, str, int]]) -> dict[str, tuple[int, int]]:
    """(devices not offline, devices known) by gateway, from counts by (gateway, state)."""
    counts: dict[str, tuple[int, int]] = {}
    for gw, state, count in rows:
        online, known = counts.get(gw, (0, 0))
        counts[gw] = (online + (count if state != "offline" else 0), known + count)
    return counts


def _rejected(counters: dict[str, int]) -> dict[str, int]:
    return {reason: n for reason, n in sorted(counters.items()) if reason not in NOT_REJECTED and n > 0}


def _progress(report: GatewayReportRow | None) -> GatewayProgress | None:
    return None if report is None else GatewayProgress.model_validate(report, from_attributes=True)


__all__ = ["Fleet", "NOT_REJECTED"]
