"""What the round service shows: the current round, one round, the fleet status, the latest model, the gauges.
Read-only transactions over the database; ``Rounds`` (cloud.rounds) adds the mutations."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cloud import storage as db
from cloud.metrics import Gauges
from cloud.settings import CloudSettings
from cloud.storage import CLOSED, Storage
from cloud.views import CarriedShare, CurrentRound, GatewayInfo, GatewayShare, HistoryEntry, RoundInfo, Status
from flcore.model import ModelSpec


@dataclass(frozen=True, eq=False)
class ModelVersion:
    version: int
    layers: tuple[int, ...]
    weights: np.ndarray


class RoundViews:
    """The read side of the round service over ``storage``."""

    def __init__(
        self, settings: CloudSettings, spec: ModelSpec, storage: Storage, clock: Callable[[], float] = time.time
    ):
        self.settings = settings
        self.spec = spec
        self.params = spec.param_count
        self.storage = storage
        self.clock = clock
        self._model_cache: ModelVersion | None = None

    def current(self) -> CurrentRound:
        s_ = self.settings
        with self.storage.transaction() as s:
            row = db.current_round(s)
            last = db.closed_through(row)
        assert row is not None  # _initialize always opens round 1
        done = last >= s_.rounds
        if done:
            # The final model's version is `last`; no round trains from it.
            rnd, base, deadline = last, last, (row.closed_at or self.clock())
        else:
            rnd, base = row.round, row.base
            deadline = row.deadline if row.deadline is not None else self.clock() + s_.round_timeout
        return CurrentRound(
            round=rnd,
            base=base,
            state="done" if done else "open",
            deadline=deadline,
            layers=list(self.spec.layers),
            lr=s_.lr,
            epochs=s_.epochs,
            batch=s_.batch,
            chunk=s_.chunk,
            min_battery=s_.min_battery,
            gateway_rounds=s_.gateway_rounds,
            mode=s_.mode,
            select=s_.select,
            personal=s_.personal_epochs,
            widths=s_.width_map,
        )

    def round_info(self, r: int) -> RoundInfo | None:
        with self.storage.transaction() as s:
            row = db.get_round(s, r)
            aggs = db.round_aggregates(s, r) if row is not None else []
        if row is None:
            return None
        shares = {a.gw: GatewayShare(k=a.k, n=a.n, loss=a.loss) for a in aggs if a.round == r}
        carried = [
            CarriedShare(gw=a.gw, round=a.round, k=a.k, n=a.n, loss=a.loss, staleness=r - a.round, weight=a.weight)
            for a in aggs
            if a.round != r
        ]
        closed = row.state == CLOSED
        return RoundInfo(
            round=row.round,
            state="closed" if closed else "open",
            base=row.base,
            k=row.k if closed else sum(a.k for a in aggs),
            n=row.n if closed else sum(a.n for a in aggs),
            accuracy=row.accuracy,
            loss=row.loss,
            gateways=shares,
            carried=carried,
            train_loss=row.train_loss,
            bytes_up=row.bytes_up if closed else sum(a.bytes_up for a in aggs),
            deadline=row.deadline,
            closed_at=row.closed_at,
            p_accuracy=row.p_accuracy,
            l_accuracy=row.l_accuracy,
            p_devices=row.p_devices,
        )

    def status(self) -> Status:
        with self.storage.transaction() as s:
            history = db.closed_rounds(s)
            current = db.current_round(s)
            initial = db.get_model(s, 0)
            gateways = db.gateways(s)
            reported = db.rounds_reported(s)
            devices = db.devices_seen(s)
            version = db.latest_version(s)
        assert current is not None and initial is not None
        last = history[-1].round if history else 0
        done = last >= self.settings.rounds
        return Status(
            fleet=self.settings.fleet,
            round=last if done else current.round,
            model_version=version,
            state="done" if done else "running",
            gateways=[
                GatewayInfo(id=g.id, last_seen=g.last_seen, rounds_reported=reported.get(g.id, 0)) for g in gateways
            ],
            devices_seen=devices,
            history=[
                HistoryEntry(
                    round=h.round,
                    accuracy=h.accuracy,
                    loss=h.loss,
                    k=h.k,
                    n=h.n,
                    bytes_up=h.bytes_up,
                    closed_at=h.closed_at,
                    train_loss=h.train_loss,
                    p_accuracy=h.p_accuracy,
                    l_accuracy=h.l_accuracy,
                    p_devices=h.p_devices,
                )
                for h in history
            ],
            total_rounds=self.settings.rounds,
            initial_accuracy=initial.accuracy,
            deadline=None if done else current.deadline,
            server_opt=self.settings.server_opt,
            server_lr=self.settings.opt_params.eta,
        )

    def latest_model(self) -> ModelVersion:
        """The newest global model (cached until a round closes)."""
        with self.storage.transaction() as s:
            version = db.latest_version(s)
            cached = self._model_cache
            if cached is None or cached.version != version:
                row = db.get_model(s, version)
                assert row is not None
                cached = ModelVersion(row.version, self.spec.layers, from_f32(row.weights))
                self._model_cache = cached
        return cached

    def gauges(self) -> Gauges:
        with self.storage.transaction() as s:
            current = db.current_round(s)
            last = db.closed_through(current)
            version = db.latest_version(s)
            accuracy = db.model_accuracy(s, version)
            gateways = len(db.live_gateways(s, since=0.0))
            devices = db.devices_seen(s)
        return Gauges(
            rounds_closed=last,
            current_round=current.round if current else 0,
            model_version=version,
            last_accuracy=accuracy,
            done=last >= self.settings.rounds,
            gateways_seen=gateways,
            devices_seen=devices,
        )


def f32(values: np.ndarray) -> bytes:
    """Weights as stored: little-endian float32 bytes."""
    return np.asarray(values, dtype="<f4").tobytes()


def from_f32(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").astype(np.float32)
